"""One registry, one config shape (issue 16): portanet.registry, and every kind that uses it.

Every kind (activations, losses, metrics, regularizers, initializers, schedules, optimizers,
layers) spells names one way, writes ``{"class_name": ..., "config": {...}}``, still reads the
two shapes that format-1 and format-2 checkpoints hold (``{"class_name", **config}`` and
``{"name", **config}``), and answers an unknown name with one message that suggests the closest
names. The expected values are written here by hand or come from objects built in code, never
from the lookup under test.
"""

from __future__ import annotations

import ast
import json
import pathlib

import numpy as np
import pytest

import portanet as pn
from portanet import (
    activations,
    initializers,
    io,
    layers,
    losses,
    metrics,
    optimizers,
    registry,
    regularizers,
    schedules,
)
from portanet.layers import base as layers_base
from portanet.model import Sequential
from portanet.registry import Registry, key, make_config, parse_config

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _json(config):
    """What a checkpoint gives back: the config through JSON text."""
    return json.loads(json.dumps(config))


def _shape_of(config) -> set:
    return set(config)


# ---------------------------------------------------------------------------------------------
# The Registry itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["leaky_relu", "LeakyReLU", "leaky-relu", " Leaky ReLU ",
                                      "LEAKY_RELU", "leakyrelu"])
def test_one_spelling_rule(spelling):
    assert key(spelling) == "leakyrelu"


def test_register_lookup_aliases_and_names():
    r = Registry("widget")
    r.register("Square", "the square", aliases=("quad", "QUAD", "square"))  # repeats are skipped
    r.register("circle", "the circle")
    assert r.lookup("SQUARE") == r.lookup("quad") == r["q-u-a-d"] == "the square"
    assert r.canonical("Qu_ad") == "Square"
    assert r.names() == ["circle", "quad", "Square"]  # each spelling once, case-insensitive order
    assert list(r) == ["Square", "circle"] and len(r) == 2  # the entries, not the aliases
    assert "square" in r and "triangle" not in r
    assert r.get("triangle", "none") == "none" and r.get("quad") == "the square"  # Mapping.get


def test_a_taken_name_is_refused_in_any_spelling_unless_overwritten():
    r = Registry("widget")
    r.register("Square", 1, aliases=("quad",))
    for clash in ("square", "SQUARE", "Quad"):
        with pytest.raises(ValueError, match=rf"widget '{clash}' is already registered \(as "
                                             r"'Square'\); pass overwrite=True"):
            r.register(clash, 2)
    r.register("QUAD", 3, overwrite=True)  # takes only the alias away from Square
    assert r["quad"] == 3 and r["square"] == 1 and r.names() == ["QUAD", "Square"]
    r.register("square", 4, overwrite=True)  # another spelling of an entry replaces the entry
    assert list(r) == ["QUAD", "square"] and r["Square"] == 4
    with pytest.raises(TypeError, match="a widget name must be a non-empty string, received ''"):
        r.register("", 5)
    with pytest.raises(TypeError, match="a widget name must be a non-empty string, received 3"):
        r.register("circle", 5, aliases=(3,))
    with pytest.raises(TypeError, match="a widget alias must be a non-empty string, received 3"):
        r.alias("square", 3)


def test_the_mapping_assigns_and_deletes_entries_with_their_aliases():
    r = Registry("widget")
    r["Square"] = 1
    r.alias("square", "quad")
    assert r["QUAD"] == 1
    with pytest.raises(ValueError, match="widget 'quad' is already registered"):
        r.register("Circle", 2, aliases=("quad",))
    r.register("Circle", 2)
    with pytest.raises(ValueError, match=r"widget 'QUAD' is already registered \(as 'Square'\); "
                                         "choose another alias"):
        r.alias("circle", "QUAD")
    del r["circle"]
    del r["quad"]  # any name of the entry removes it, aliases included
    assert len(r) == 0 and r.names() == []
    with pytest.raises(KeyError):
        del r["square"]
    with pytest.raises(KeyError):
        r[3]


def test_parse_config_reads_the_three_shapes():
    assert parse_config({"class_name": "Huber", "config": {"delta": 2.0}}) == (
        "Huber", {"delta": 2.0}, {})
    assert parse_config({"class_name": "Huber", "config": {}, "trainable": False}) == (
        "Huber", {}, {"trainable": False})
    assert parse_config({"class_name": "Adam", "learning_rate": 0.1}) == (
        "Adam", {"learning_rate": 0.1}, {})
    assert parse_config({"name": "huber", "delta": 2.0}) == ("huber", {"delta": 2.0}, {})
    assert make_config("Huber", {"delta": 2.0}, state=1) == {
        "class_name": "Huber", "config": {"delta": 2.0}, "state": 1}


@pytest.mark.parametrize("config, match", [
    ([1, 2], r"a loss config is a dict \{'class_name': \.\.\., 'config': \{\.\.\.\}\}, "
             r"received \[1, 2\]"),
    ({"reduction": "sum"}, r"has no 'class_name' key"),
    ({"class_name": 7}, r"the class_name of a loss config must be a string, received 7"),
    ({"class_name": "Huber", "config": [1]}, r"the 'config' of a loss config must be a dict, "
                                             r"received \[1\]"),
])
def test_parse_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        parse_config(config, "loss")


def test_the_old_name_shape_is_not_read_where_name_is_an_argument():
    with pytest.raises(ValueError, match="has no 'class_name' key"):
        parse_config({"name": "dense_1", "rate": 0.5}, "layer", name_key=False)


def test_resolve_builds_names_configs_classes_and_keeps_instances():
    class Shape:
        def __init__(self, side=1.0):
            self.side = side

    r = Registry("shape", base=Shape, wrap=lambda f, **p: ("wrapped", f, p))
    r.register("Shape", Shape, aliases=("box",))
    assert r.resolve("box", side=3.0).side == 3.0
    assert r.resolve({"class_name": "Shape", "config": {"side": 2.0}}).side == 2.0
    assert r.resolve({"class_name": "Shape", "config": {"side": 2.0}}, side=5.0).side == 5.0
    assert r.resolve(Shape, side=4.0).side == 4.0
    made = Shape()
    assert r.resolve(made) is made
    assert r.resolve(len) == ("wrapped", len, {})
    with pytest.raises(TypeError, match=r"shape 'Shape' received the parameters \['edge'\]; "
                                        r"it accepts \['side'\]"):
        r.resolve("shape", edge=1.0)
    with pytest.raises(TypeError, match=r"received parameters \['side'\], but that shape is "
                                        "already built"):
        r.resolve(made, side=1.0)
    with pytest.raises(ValueError, match=r"a shape config has only 'class_name' and 'config', "
                                         r"received the extra keys \['colour'\]"):
        r.resolve({"class_name": "Shape", "config": {}, "colour": "red"})
    with pytest.raises(TypeError, match=r"cannot make a shape from 3 \(int\); pass a shape name "
                                        "or a config dict"):
        Registry("shape").resolve(3)


def test_missing_arguments_are_named():
    r = Registry("layer class")
    r.register("Dense", layers.Dense)
    with pytest.raises(TypeError, match=r"layer class 'Dense' needs the parameters "
                                        r"\['in_features', 'out_features'\]"):
        r.resolve("dense")


def test_factory_false_gives_the_object_and_refuses_parameters():
    r = Registry("metric", factory=False)
    marker = object()
    r.register("acc", marker)
    assert r.resolve("ACC") is marker
    with pytest.raises(TypeError, match=r"metric 'acc' takes no parameters, received \['k'\]"):
        r.resolve("acc", k=1)


def test_the_unknown_name_message():
    r = Registry("activation", hint="Register your own.")
    for name in ("relu", "relu6", "tanh"):
        r.register(name, name)
    with pytest.raises(ValueError) as info:
        r.resolve("rleu")
    assert str(info.value) == ("unknown activation 'rleu'; did you mean 'relu', 'relu6'? "
                               "Known: relu, relu6, tanh. Register your own.")
    with pytest.raises(ValueError) as info:
        r.resolve("sigmoid")
    assert str(info.value) == "unknown activation 'sigmoid'. Known: relu, relu6, tanh. " \
                              "Register your own."
    with pytest.raises(ValueError, match=r"unknown activation 'xxxxxxxxxx.*\.\.\. \(10002 "
                                         r"characters\)\. Known"):
        r.resolve("x" * 10000)  # a hostile file's name is cut, not quoted whole
    with pytest.raises(ValueError, match="an activation name must be a string, received 5"):
        r.canonical(5)


def test_registry_is_on_the_lowest_floor():
    """It may import the standard library and portanet's floor-1 modules only."""
    tree = ast.parse(pathlib.Path(registry.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "difflib", "inspect", "collections.abc", "typing",
                        "errors"}, imported


# ---------------------------------------------------------------------------------------------
# Every kind, every registered name: get_config writes the one shape, get reads it back
# ---------------------------------------------------------------------------------------------
def _old_shapes(config):
    """The format-1/2 spellings of ``config`` (nested configs rewritten too)."""
    def flat(c):
        if isinstance(c, dict) and set(c) >= {"class_name", "config"}:
            inner = {k: flat(v) for k, v in c["config"].items()}
            return {"class_name": c["class_name"], **inner,
                    **{k: v for k, v in c.items() if k not in ("class_name", "config")}}
        return c

    def named(c):
        c = flat(c)
        return {"name": c.pop("class_name"), **c}

    return flat(config), named(config)


ACTIVATION_PARAMS = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.5}, "swish": {"beta": 2.0},
                     "softmax": {"axis": 0, "temperature": 2.0}, "log_softmax": {"axis": 0}}


@pytest.mark.parametrize("name", activations.known_names())
def test_every_activation_round_trips(name):
    x = np.linspace(-3.0, 3.0, 12).reshape(3, 4)
    for params in ({}, ACTIVATION_PARAMS.get(name, {})):
        act = activations.get(name, **params)
        config = act.get_config()
        assert config == {"class_name": act.name, "config": params}
        for shape in (_json(config), *_old_shapes(config)):
            again = activations.get(shape)
            assert again == act and again._forward is act._forward
            np.testing.assert_array_equal(again.forward(x), act.forward(x))


@pytest.mark.parametrize("name", sorted(losses._REGISTRY))
def test_every_loss_round_trips(name):
    for params in ({}, {"reduction": "sum"}):
        loss = losses.get(name, **params)
        config = loss.get_config()
        assert _shape_of(config) == {"class_name", "config"}
        assert config["class_name"] == type(loss).__name__
        assert config["config"]["reduction"] == params.get("reduction", "mean")
        for shape in (_json(config), *_old_shapes(config)):
            assert losses.get(shape) == loss and losses.from_config(shape) == loss
    special = losses.get("huber", delta=2.5).get_config()
    assert special == {"class_name": "Huber", "config": {"reduction": "mean", "delta": 2.5}}


@pytest.mark.parametrize("name", metrics._REGISTRY.names())
def test_every_metric_name_gives_a_metric_that_its_own_name_gives_back(name):
    metric = metrics.get(name)
    assert isinstance(metric, metrics.Metric)
    assert metrics.get(metric.name) is metric and metrics.get(name.upper()) is metric


@pytest.mark.parametrize("name", regularizers._REGISTRY.names())
def test_every_regularizer_round_trips(name):
    reg = regularizers.get(name)
    config = reg.get_config()
    assert _shape_of(config) == {"class_name", "config"}
    for shape in (_json(config), *_old_shapes(config)):
        assert regularizers.get(shape) == reg and regularizers.deserialize(shape) == reg
    # The short names' factors, written out (L1L2 by name: both 0.01).
    assert (regularizers.get("l1"), regularizers.get("L2"), regularizers.get("l1l2")) == (
        regularizers.L1(0.01), regularizers.L2(0.01), regularizers.L1L2(0.01, 0.01))


@pytest.mark.parametrize("name", initializers._REGISTRY.names())
def test_every_initializer_round_trips(name):
    init = initializers.get(name)
    config = init.get_config()
    assert _shape_of(config) == {"class_name", "config"}
    assert config["class_name"] == type(init).__name__
    want = init.draw((3, 3), np.random.default_rng(0))
    for shape in (_json(config), *_old_shapes(config)):
        again = initializers.get(shape)
        assert again == init and initializers.deserialize(shape) == init
        np.testing.assert_array_equal(again.draw((3, 3), np.random.default_rng(0)), want)


SCHEDULES = {
    "Constant": lambda: schedules.Constant(0.1),
    "StepDecay": lambda: schedules.StepDecay(0.1, step_size=3, gamma=0.5),
    "MultiStepDecay": lambda: schedules.MultiStepDecay(0.1, milestones=[2, 5]),
    "ExponentialDecay": lambda: schedules.ExponentialDecay(0.1, decay_rate=0.5, decay_steps=2),
    "InverseTimeDecay": lambda: schedules.InverseTimeDecay(0.1, decay_rate=0.5),
    "PolynomialDecay": lambda: schedules.PolynomialDecay(0.1, decay_steps=6, power=2.0),
    "CosineAnnealing": lambda: schedules.CosineAnnealing(0.1, decay_steps=6),
    "CosineWarmRestarts": lambda: schedules.CosineWarmRestarts(0.1, first_period=3),
    "Cyclical": lambda: schedules.Cyclical(0.01, 0.1, step_size_up=2),
    "OneCycle": lambda: schedules.OneCycle(0.1, total_steps=8),
    "LinearWarmup": lambda: schedules.LinearWarmup(
        schedules.CosineAnnealing(0.1, decay_steps=5), warmup_steps=2),
    "PlateauDecay": lambda: _plateau(),
}


def _plateau():
    s = schedules.PlateauDecay(1.0, patience=0, factor=0.5)
    for value in (3.0, 3.0, 3.0):  # two reductions: the state is part of the config
        s.update(value)
    return s


def test_every_schedule_has_a_case():
    assert set(schedules._REGISTRY) == set(SCHEDULES)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_round_trips(name):
    schedule = SCHEDULES[name]()
    config = schedule.get_config()
    extra = {"state"} if name == "PlateauDecay" else set()
    assert _shape_of(config) == {"class_name", "config"} | extra
    assert config["class_name"] == name
    want = [schedule(t) for t in range(10)]
    for shape in (_json(config), _old_shapes(config)[0]):  # schedules never wrote "name"
        again = schedules.get(shape)
        assert type(again) is type(schedule) and again.get_config() == config
        assert [again(t) for t in range(10)] == want


def test_the_old_plateau_name_and_shape_load_with_their_state():
    """Format 1-2 wrote {"class_name": "ReduceLROnPlateau", **arguments, "state": {...}}."""
    old = {"class_name": "ReduceLROnPlateau", "initial_learning_rate": 1.0, "mode": "min",
           "factor": 0.5, "patience": 0, "threshold": 1e-4, "threshold_mode": "rel",
           "cooldown": 0, "min_learning_rate": 0.0, "eps": 1e-8,
           "state": {"learning_rate": 0.25, "best": 3.0, "num_bad_epochs": 0,
                     "cooldown_counter": 0}}
    s = schedules.get(old)
    assert type(s) is schedules.PlateauDecay and s(0) == 0.25 and s.best == 3.0
    assert s.get_config() == _plateau().get_config()


@pytest.mark.parametrize("name", sorted(optimizers._REGISTRY))
def test_every_optimizer_round_trips(name):
    opt = optimizers.get(name, learning_rate=0.05)
    config = opt.get_config()
    assert _shape_of(config) == {"class_name", "config"}
    assert config["class_name"] == type(opt).__name__ and config["config"]["learning_rate"] == 0.05
    for shape in (_json(config), _old_shapes(config)[0]):  # optimizers never wrote "name"
        again = optimizers.get(shape)
        assert type(again) is type(opt) and again.get_config() == config
        assert optimizers.from_config(shape).get_config() == config


def test_the_optimizer_names_for_configurations():
    nesterov = optimizers.get("Nesterov")
    assert (type(nesterov), nesterov.momentum, nesterov.nesterov) == (optimizers.SGD, 0.9, True)
    assert optimizers.get("momentum").momentum == 0.9 and not optimizers.get("sgd").momentum
    assert optimizers.get("AMS-Grad").amsgrad and not optimizers.get("adam").amsgrad


def test_an_optimizer_with_a_schedule_writes_nested_configs():
    opt = optimizers.Adam(schedules.LinearWarmup(schedules.ExponentialDecay(0.01, 0.5), 2))
    assert opt.get_config()["config"]["learning_rate"] == {
        "class_name": "LinearWarmup",
        "config": {"schedule": {"class_name": "ExponentialDecay",
                                "config": {"initial_learning_rate": 0.01, "decay_rate": 0.5,
                                           "decay_steps": 1, "staircase": False}},
                   "warmup_steps": 2, "start_factor": 0.1}}


LAYERS = {
    "Activation": lambda: layers.Activation("softmax", temperature=2.0),
    "AvgPool2D": lambda: layers.AvgPool2D(2, padding=1),
    "BatchNorm": lambda: layers.BatchNorm(3, momentum=0.2),
    "Bidirectional": lambda: layers.Bidirectional(layers.GRU(2, 2, return_sequences=True)),
    "Chain": lambda: layers.Chain([layers.Dense(3, 3, activation="gelu"), layers.Dense(3, 2)]),
    "Conv2D": lambda: layers.Conv2D(2, 2, kernel_size=2, activation="tanh"),
    "Dense": lambda: layers.Dense(3, 2, activation=activations.get("leaky_relu", alpha=0.2),
                                  kernel_regularizer=regularizers.L1L2(0.1, 0.2),
                                  bias_initializer=initializers.Constant(0.5)),
    "Dropout": lambda: layers.Dropout(0.5, seed=2),
    "Embedding": lambda: layers.Embedding(5, 2, mask_zero=True),
    "Flatten": lambda: layers.Flatten(),
    "GRU": lambda: layers.GRU(2, 2),
    "GlobalAvgPool1D": lambda: layers.GlobalAvgPool1D(),
    "GlobalAvgPool2D": lambda: layers.GlobalAvgPool2D(),
    "GroupNorm": lambda: layers.GroupNorm(2, 4),
    "LSTM": lambda: layers.LSTM(2, 2, return_sequences=True),
    "LastStep": lambda: layers.LastStep(),
    "LayerNorm": lambda: layers.LayerNorm(3),
    "Masking": lambda: layers.Masking(),
    "MaxPool2D": lambda: layers.MaxPool2D(2),
    "Maxout": lambda: layers.Maxout(3, 2, pieces=2),
    "MultiHeadAttention": lambda: layers.MultiHeadAttention(4, 2, dropout=0.2),
    "PositionalEmbedding": lambda: layers.PositionalEmbedding(4, 2),
    "Reshape": lambda: layers.Reshape((4,)),
    "Residual": lambda: layers.Residual(layers.Dense(3, 3, activation="tanh")),
    "Sequential": lambda: Sequential([layers.Dense(3, 2, activation="elu")], loss="mse",
                                     optimizer="nesterov", seed=1),
    "SimpleRNN": lambda: layers.SimpleRNN(2, 2, activation="relu"),
    "SinusoidalPositionalEncoding": lambda: layers.SinusoidalPositionalEncoding(4, 2),
    "Standardize": lambda: layers.Standardize(3),
    "TransformerEncoderBlock": lambda: layers.TransformerEncoderBlock(4, 2, 4, dropout=0.2),
}


def test_every_layer_has_a_case():
    """A new built-in layer fails here until it gets a row in LAYERS (test classes that other
    tests register are not portanet's)."""
    builtin = {n for n, cls in layers_base._REGISTRY.items()
               if cls.__module__.startswith("portanet.")}
    assert builtin == set(LAYERS)


def _configs_in(node, where="config"):
    """Every dict in a config tree that names a class, with where it is."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield where, node
        for k, v in node.items():
            yield from _configs_in(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _configs_in(v, f"{where}[{i}]")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_round_trips(name):
    layer = LAYERS[name]()
    config = layers.serialize(layer)
    assert _shape_of(config) == {"class_name", "config"} and config["class_name"] == name
    for where, inner in _configs_in(config):  # nested parts (initializers, ...) too
        assert set(inner) - {"state", "trainable"} == {"class_name", "config"}, where
    for get in (layers.get, layers.deserialize):
        again = get(_json(config))
        assert type(again) is type(layer) and layers.serialize(again) == config


def test_layers_get_builds_a_class_by_name():
    dense = layers.get("dense", in_features=3, out_features=2)
    assert type(dense) is layers.Dense and (dense.in_features, dense.out_features) == (3, 2)
    assert layers.get(layers.Dense, in_features=1, out_features=1).out_features == 1
    with pytest.raises(TypeError, match=r"received parameters \['units'\]; a layer config holds"):
        layers.get(layers.serialize(dense), units=3)


def test_a_layer_class_that_would_shadow_another_by_spelling_is_refused():
    with pytest.raises(ValueError, match=r"layer class 'DENSE' would replace the registered "
                                         r"layer class 'Dense'"):
        @layers.register
        class DENSE(layers.Dense):
            pass
    assert layers_base._REGISTRY["dense"] is layers.Dense


# ---------------------------------------------------------------------------------------------
# One unknown-name message, for every kind
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("get, typo, kind, suggestion", [
    (activations.get, "rleu", "activation", "'relu'"),
    (losses.get, "huberr", "loss", "'Huber'"),
    (metrics.get, "acuracy", "metric", "'accuracy'"),
    (regularizers.get, "l22", "regularizer", "'L2'"),
    (initializers.get, "he_normall", "initializer", "'HeNormal'"),
    (schedules.get, "CosineAnealing", "schedule", "'CosineAnnealing'"),
    (optimizers.get, "adamm", "optimizer", "'Adam'"),
    (lambda name: layers.deserialize({"class_name": name, "config": {}}), "Dnese",
     "layer class", "'Dense'"),
])
def test_the_unknown_name_error_suggests_close_matches_for_every_kind(get, typo, kind,
                                                                      suggestion):
    with pytest.raises(ValueError) as info:
        get(typo)
    message = str(info.value)
    assert message.startswith(f"unknown {kind} {typo!r}; did you mean {suggestion}"), message
    assert "? Known: " in message


def test_unknown_names_in_configs_get_the_same_message():
    with pytest.raises(ValueError, match=r"unknown loss 'Hubber'; did you mean 'Huber'"):
        losses.get({"class_name": "Hubber", "config": {}})
    with pytest.raises(ValueError, match=r"unknown optimizer 'Adamm'; did you mean 'Adam'"):
        optimizers.get({"class_name": "Adamm", "learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"unknown activation 'rleu'; did you mean 'relu'"):
        layers.Dense(2, 2, activation={"name": "rleu"})


# ---------------------------------------------------------------------------------------------
# Checkpoints: a model saved now loads as itself, and writes only the one shape
# ---------------------------------------------------------------------------------------------
def _model():
    return Sequential([
        layers.Dense(2, 4, activation="relu", kernel_regularizer=regularizers.L2(0.01)),
        layers.Dropout(0.25, seed=3),
        layers.BatchNorm(4),
        layers.Dense(4, 3, activation=activations.get("leaky_relu", alpha=0.2),
                     bias_regularizer="l1l2", kernel_initializer="he_normal"),
        layers.Activation("softmax", temperature=2.0),
    ], loss=losses.CategoricalCrossEntropy(reduction="sum"),
        optimizer=optimizers.Adam(schedules.LinearWarmup(
            schedules.ExponentialDecay(0.01, decay_rate=0.5, decay_steps=4), warmup_steps=1)),
        seed=0)


def _assert_same_model(got, want):
    assert got.get_config() == want.get_config()
    for mine, theirs in ((got.parameters(), want.parameters()),
                         (got.buffers(), want.buffers())):
        assert list(mine) == list(theirs)
        for k in theirs:
            np.testing.assert_array_equal(pn.to_numpy(mine[k]), pn.to_numpy(theirs[k]), k)
    a, b = got.optimizer.state_dict(), want.optimizer.state_dict()
    assert a["step"] == b["step"] and a["config"] == b["config"]
    for name, slots in b["slots"].items():
        for s, v in slots.items():
            np.testing.assert_array_equal(pn.to_numpy(a["slots"][name][s]), pn.to_numpy(v))


def test_a_model_saved_now_loads_as_itself(backend, tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 1, 0, 2, 1]]
    with pn.use_backend(backend.name, backend.device):
        model = _model()
        model.fit(backend.asarray(x), backend.asarray(y), epochs=1, batch_size=4, verbose=0,
                  seed=0, shuffle=False)
        path = model.save(tmp_path / "now.safetensors")
    loaded = io.load(path, backend=backend.name, device=backend.device)
    _assert_same_model(loaded, model)
    xs = backend.asarray(x)
    np.testing.assert_array_equal(pn.to_numpy(loaded.predict(xs)),
                                  pn.to_numpy(model.predict(xs)))
    # Every config in the file has the one shape.
    architecture = io.read_checkpoint(path).architecture
    found = list(_configs_in(architecture))
    assert len(found) >= 12  # layers, initializers, regularizers, activation, loss, optimizer...
    for where, config in found:
        assert set(config) - {"state", "trainable"} == {"class_name", "config"}, where
    assert architecture["loss"] == {"class_name": "CategoricalCrossEntropy",
                                    "config": {"reduction": "sum", "epsilon": 1e-7}}


def test_the_v2_fixture_saved_again_is_written_in_the_one_shape(tmp_path):
    expected = json.loads((FIXTURES / "v2_expected.json").read_text())
    with pn.use_backend("numpy"):
        old = io.load(FIXTURES / "v2_model.safetensors")
        path = old.save(tmp_path / "again.safetensors")
        again = io.load(path)
    for where, config in _configs_in(io.read_checkpoint(path).architecture):
        assert set(config) - {"state", "trainable"} == {"class_name", "config"}, where
    _assert_same_model(again, old)
    for k, v in expected["parameters"].items():
        np.testing.assert_array_equal(pn.to_numpy(again.parameters()[k]),
                                      np.asarray(v, dtype=np.float32), k)
    assert [again.optimizer.learning_rate(t) for t in range(8)] == expected["learning_rates"]
