"""No host read anywhere in a training step: not in a layer, a loss, a regularizer, the
optimizer or clipping, nor in the engine around them (DESIGN.md rule 4, issue 14).

The guard runs whole ``train_step`` calls on array-api-strict (eager, on CPU_DEVICE and on
device1) with every way a value can leave an array made to raise: ``float()``, ``int()``,
``bool()`` (a Python ``if`` on an array), ``operator.index``, ``complex()``, ``np.asarray``
(``__array__``), DLPack, ``repr``/``str`` (a print), and portanet's own ``to_numpy`` wherever a
module imported it. test_engine.py's check under ``jax.jit`` covers compiled steps; this one
covers eager code paths too, e.g. the in-place optimizer path, which JAX never takes. The last
tests plant a ``float()`` in a layer's forward pass and in an optimizer and show the guard
fails them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import array_api_compat as compat
import numpy as np
import pytest

import portanet as pn
from portanet import devices
from portanet import layers as L
from portanet import optimizers as O
from portanet.backends import ADAPTERS

xps = pytest.importorskip("array_api_strict")
ARRAY = type(xps.asarray(1.0))
CONVERSIONS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__",
               "__dlpack__", "__repr__", "__str__")
RNG = np.random.default_rng(0)


class HostRead(AssertionError):
    """A value was read back to the host inside a training step."""


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    """Within the block, any conversion of an array-api-strict array to a host value raises
    :class:`HostRead` (restored on exit, so that assertion messages can print arrays)."""

    def refuse(what):
        def raiser(*args, **kwargs):
            raise HostRead(f"{what} inside a training step: a host read")
        return raiser

    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
        setattr(owner, name, value)

    for method in CONVERSIONS:
        patch(ARRAY, method, refuse(f"Array.{method}"))
    for module in list(sys.modules.values()):  # `from .devices import to_numpy` binds a name
        if getattr(module, "__name__", "").split(".")[0] == "portanet" and \
                getattr(module, "to_numpy", None) is devices.to_numpy:
            patch(module, "to_numpy", refuse(f"{module.__name__}.to_numpy"))
    for adapter in {type(a) for a in ADAPTERS.values()}:
        for klass in adapter.__mro__:
            if "to_numpy" in klass.__dict__:
                patch(klass, "to_numpy", refuse(f"{klass.__name__}.to_numpy"))
    try:
        yield
    finally:
        for owner, name, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, old)


_MISSING = object()


@pytest.fixture(params=["CPU_DEVICE", "device1"])
def strict(request):
    with pn.use_backend("array_api_strict", request.param):
        yield request.param


def _data(x_shape, y):
    x = pn.asarray(RNG.normal(size=x_shape), dtype="float32")
    return x, pn.asarray(y)


def _steps(model, x, y, n=2):
    """``n`` training steps under the guard (the first also creates the optimizer's state),
    then one read outside it to show the step computed something."""
    with no_host_reads():
        for _ in range(n):
            loss = model.train_step(x, y)
    assert np.isfinite(float(pn.to_numpy(loss)))


IMAGES = (6, 1, 6, 6)
CLASSES = RNG.integers(0, 3, 6)


def _image_model(optimizer):
    return pn.Sequential([
        L.Conv2D(1, 2, kernel_size=3, padding="same", activation="gelu"), L.BatchNorm(2),
        L.MaxPool2D(2), L.AvgPool2D(1),
        L.Residual([L.Conv2D(2, 2, kernel_size=3, padding="same")]),
        L.GroupNorm(1, 2), L.Activation("relu"), L.Dropout(0.1), L.Flatten(), L.Reshape((18,)),
        L.LayerNorm(18), L.Maxout(18, 6, pieces=2),
        L.Dense(6, 3, activation="selu", kernel_regularizer="l2"),
    ], loss="softmax_cross_entropy", optimizer=optimizer, seed=0)


OPTIMIZERS = [
    lambda: O.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda: O.SGD(0.05, momentum=0.9, momentum_form="average", clip_value=1.0),
    lambda: O.Adam(0.01, amsgrad=True, clip_norm=1.0),
    lambda: O.AdamW(0.01, global_clip_norm=0.5),
    lambda: O.NAdam(0.01, decoupled_weight_decay=True, weight_decay=0.1),
    lambda: O.AdaGrad(0.05, lr_decay=0.01),
    lambda: O.RMSProp(0.01, momentum=0.5, centered=True),
    lambda: O.AdaDelta(1.0),
    lambda: O.Adamax(0.01, clip_norm=2.0, global_clip_norm=1.0),
]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=lambda f: repr(f()))
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "portable"])
def test_image_layers_and_every_optimizer_step_without_a_host_read(strict, make, inplace):
    opt = make()
    opt.inplace = inplace
    _steps(_image_model(opt), *_data(IMAGES, CLASSES))


LOSS_TARGETS = {
    "softmax_cross_entropy": lambda: CLASSES,
    "categorical_cross_entropy": lambda: np.eye(3, dtype=np.float32)[CLASSES],
    "binary_cross_entropy_with_logits": lambda: (RNG.random((6, 3)) > 0.5).astype(np.float32),
    "mse": lambda: RNG.normal(size=(6, 3)).astype(np.float32),
    "mae": lambda: RNG.normal(size=(6, 3)).astype(np.float32),
    "huber": lambda: RNG.normal(size=(6, 3)).astype(np.float32),
    "log_cosh": lambda: RNG.normal(size=(6, 3)).astype(np.float32),
    "hinge": lambda: (RNG.random((6, 3)) > 0.5).astype(np.float32),
}


@pytest.mark.parametrize("loss", sorted(LOSS_TARGETS))
def test_every_loss_steps_without_a_host_read(strict, loss):
    softmax = loss == "categorical_cross_entropy"
    model = pn.Sequential([L.Dense(4, 3, activation="softmax" if softmax else None)],
                          loss=loss, optimizer="adam", seed=0)
    _steps(model, *_data((6, 4), LOSS_TARGETS[loss]()))


SEQUENCES = {
    "lstm": lambda: [L.Embedding(6, 3, mask_zero=True), L.LSTM(3, 4), L.Dense(4, 2)],
    "bigru": lambda: [L.Embedding(6, 3, mask_zero=True),
                      L.Bidirectional(L.GRU(3, 2), merge_mode="sum"), L.Dense(2, 2)],
    "rnn-sequences": lambda: [L.Embedding(6, 3), L.SimpleRNN(3, 4, return_sequences=True),
                              L.LastStep(), L.Dense(4, 2)],
    "transformer": lambda: [L.Embedding(6, 4, mask_zero=True), L.PositionalEmbedding(6, 4),
                            L.TransformerEncoderBlock(4, 2, 4, dropout=0.1),
                            L.GlobalAvgPool1D(), L.Dense(4, 2)],
    "attention": lambda: [L.Embedding(6, 4), L.SinusoidalPositionalEncoding(6, 4),
                          L.MultiHeadAttention(4, 2), L.GlobalAvgPool1D(), L.Dense(4, 2)],
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_sequence_layers_step_without_a_host_read(strict, name):
    ids = np.asarray([[1, 2, 3, 0, 0], [4, 5, 1, 2, 0], [3, 3, 0, 0, 0]])
    model = pn.Sequential(SEQUENCES[name](), loss="softmax_cross_entropy",
                          optimizer=O.Adam(0.01, global_clip_norm=1.0), seed=0)
    _steps(model, pn.asarray(ids), pn.asarray(np.asarray([0, 1, 1])))


def test_augment_inside_the_step_reads_nothing(strict):
    model = pn.Sequential([L.Flatten(), L.Dense(36, 3)], loss="softmax_cross_entropy",
                          optimizer="sgd", seed=0)
    augment = pn.data.Augment(["flip", "shift"])
    x, y = _data(IMAGES, CLASSES)
    with no_host_reads():
        model.train_step(x, y, augment=augment)


# -- the guard can fail ------------------------------------------------------------------------
def test_a_float_planted_in_a_layer_fails_the_guard(strict, monkeypatch):
    """The mutation the issue names: a host read inside a layer's forward pass."""
    forward = L.Dense.forward

    def peeking(self, x, training=None, *args, **kwargs):
        scale = 2.0 if float(x[0, 0]) > 0 else 1.0  # a host read
        y, backprop = forward(self, x * scale, training, *args, **kwargs)
        return y, backprop

    model = pn.Sequential([L.Dense(4, 3)], loss="mse", optimizer="sgd", seed=0)
    x, y = _data((6, 4), RNG.normal(size=(6, 3)).astype(np.float32))
    monkeypatch.setattr(L.Dense, "forward", peeking)
    with pytest.raises(HostRead, match=r"Array.__float__ inside a training step"):
        _steps(model, x, y)


@pytest.mark.parametrize("read", ["bool", "to_numpy", "print"])
def test_other_reads_in_the_step_fail_the_guard(strict, monkeypatch, read):
    """A Python `if` on a value, a to_numpy of a gradient, a debugging print: each is caught,
    here in the optimizer's update (the old guard watched only optimizer.step)."""
    update = O.SGD._update_one

    def peeking(self, p, g, slots, c, inplace):
        if read == "bool":
            if compat.array_namespace(g).all(g == 0):  # a Python `if` on an array value
                return p, slots
        elif read == "to_numpy":
            pn.to_numpy(g)
        else:
            print(g)
        return update(self, p, g, slots, c, inplace)

    model = pn.Sequential([L.Dense(4, 3)], loss="mse", optimizer="sgd", seed=0)
    x, y = _data((6, 4), RNG.normal(size=(6, 3)).astype(np.float32))
    monkeypatch.setattr(O.SGD, "_update_one", peeking)
    with pytest.raises(HostRead):
        _steps(model, x, y)
