"""A picture of a model (portanet/plotting.py): it shows summary()'s rows, the data flow, the
residual skips and the containers, writes PNG/SVG/PDF, and reads shapes only (every backend).

Expected rows are written out by hand (parameter counts: Dense(i -> o) has i*o + o) and checked
against ``model.summary()``'s own table; the picture is checked through the matplotlib artists
it holds (texts, arrow patches, frames) and their positions on the canvas.
"""

from __future__ import annotations

import builtins
import subprocess
import sys
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest

import portanet as pn
from portanet import layers as L
from portanet.plotting import UNKNOWN_SHAPE, plot_model, summary_rows

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402


def small_model() -> pn.Sequential:
    """Dense, Residual of two Dense, a named nested Sequential, Dense: every kind of row."""
    return pn.Sequential([
        L.Dense(4, 8, activation="relu"),
        L.Residual([L.Dense(8, 8, activation="relu"), L.Dense(8, 8)]),
        pn.Sequential([L.Dense(8, 6, activation="tanh"), L.Dropout(0.1)], name="head"),
        L.Dense(6, 3),
    ], seed=0)


# the model's summary rows, by hand: (index, label, output shape, parameters)
SMALL_ROWS = [
    ("0", "Dense(4 -> 8, relu)", "(N, 8)", "40"),
    ("1", "Residual", "(N, 8)", "144"),
    ("2", "head (Sequential)", "(N, 6)", "54"),
    ("3", "Dense(6 -> 3)", "(N, 3)", "21"),
]
# what is drawn inside the frames
SMALL_INNER = [
    ("1.block.0", "Dense(8 -> 8, relu)", "(N, 8)", "72"),
    ("1.block.1", "Dense(8 -> 8)", "(N, 8)", "72"),
    ("2.0", "Dense(8 -> 6, tanh)", "(N, 6)", "54"),
    ("2.1", "Dropout", "(N, 6)", "0"),
]


def texts(fig: Figure) -> list[Text]:
    """Every non-empty text of the figure, top of the picture first (by canvas position)."""
    found = [t for t in fig.findobj(Text) if t.get_text()]
    return sorted(found, key=lambda t: -t.get_transform().transform(t.get_position())[1])


def by_gid(fig: Figure, gid: str) -> Text:
    (text,) = [t for t in fig.findobj(Text) if t.get_gid() == gid]
    return text


def arrows(fig: Figure, gid: str | None = None) -> list[FancyArrowPatch]:
    found = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    return found if gid is None else [p for p in found if (p.get_gid() or "").startswith(gid)]


def frames(fig: Figure) -> list[FancyBboxPatch]:
    return [p for p in fig.axes[0].patches if (p.get_gid() or "").startswith("frame:")]


def extent(patch) -> tuple[float, float, float, float]:
    """(x0, x1, top, bottom) of a box or frame in data coordinates (y grows downwards)."""
    x, y, w, h = patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()
    return x, x + w, y, y + h


# -- the rows: summary() and the picture share them ----------------------------------------
def test_summary_rows_are_the_summary_table():
    model = small_model()
    rows = summary_rows(model)
    assert [(r.index, r.label, r.shape_text, r.params_text) for r in rows] == SMALL_ROWS
    # and they are what summary() prints, line by line
    table = model.summary().splitlines()[4:4 + len(rows)]  # title, rule, header, rule
    for line, (index, label, shape, params) in zip(table, SMALL_ROWS, strict=True):
        assert line.split()[0] == index and line.rstrip().endswith(params)
        assert label in line and shape in line


def test_summary_rows_without_input_shape():
    model = pn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), L.Dense(8, 2)], seed=0)
    assert {r.shape_text for r in summary_rows(model)} == {UNKNOWN_SHAPE}
    rows = summary_rows(model, input_shape=(1, 4, 4))
    assert [r.shape_text for r in rows] == ["(N, 2, 2, 2)", "(N, 8)", "(N, 2)"]
    assert [r.params for r in rows] == [1 * 2 * 9 + 2, 0, 8 * 2 + 2]


# -- the picture -------------------------------------------------------------------------------
def test_picture_shows_every_summary_row_in_order():
    model = small_model()
    fig = plot_model(model)
    assert isinstance(fig, Figure)
    shown = [t.get_text() for t in texts(fig)]
    # every row's label, shape and parameter count is drawn, under its gid
    for index, label, shape, params in SMALL_ROWS + SMALL_INNER:
        assert by_gid(fig, f"label:{index}").get_text() == label
        assert by_gid(fig, f"shape:{index}").get_text() == shape
        assert by_gid(fig, f"params:{index}").get_text() == f"{params} params"
    # top to bottom on the canvas: title, input, then the rows (inner ones inside their frame)
    order = [shown.index(label) for _, label, _, _ in SMALL_ROWS]
    assert order == sorted(order)
    inner = [shown.index(label) for _, label, _, _ in SMALL_INNER]
    assert order[1] < inner[0] < inner[1] < order[2] < inner[2] < inner[3] < order[3]
    assert shown[0] == "Sequential: 259 parameters" and shown[1] == "input"
    assert shown[2] == "(N, 4)"
    # each row's shape and count sit on its box, below its label and above the next row
    for (index, *_), (following, *_) in pairwise(SMALL_ROWS):
        top = by_gid(fig, f"label:{index}").get_position()[1]
        below = by_gid(fig, f"label:{following}").get_position()[1]
        for field in ("shape", "params"):
            assert top <= by_gid(fig, f"{field}:{index}").get_position()[1] < below


def test_show_shapes_and_params_can_be_left_out():
    model = small_model()
    gids = {t.get_gid() or "" for t in plot_model(model, show_shapes=False).findobj(Text)}
    assert not any(g.startswith("shape:") for g in gids) and "params:0" in gids
    gids = {t.get_gid() or "" for t in plot_model(model, show_params=False).findobj(Text)}
    assert not any(g.startswith("params:") for g in gids) and "shape:0" in gids


def test_unknown_shapes_are_drawn_as_summary_shows_them():
    model = pn.Sequential([L.Conv2D(1, 2, 3), L.Flatten(), L.Dense(8, 2)], seed=0)
    fig = plot_model(model)
    assert [by_gid(fig, f"shape:{i}").get_text() for i in range(3)] == [UNKNOWN_SHAPE] * 3
    fig = plot_model(model, input_shape=(1, 4, 4))
    assert by_gid(fig, "shape:0").get_text() == "(N, 2, 2, 2)"


@pytest.mark.parametrize(("layers", "nodes", "skips"), [
    # drawn nodes = the input box, one box per leaf layer, one add node per Residual
    ([L.Dense(4, 4), L.Dense(4, 4), L.Dense(4, 2)], 4, 0),
    ([L.Dense(4, 4), L.Residual([L.Dense(4, 4), L.Dense(4, 4)]), L.Dense(4, 2)], 6, 1),
    ([L.Residual(L.Residual([L.Dense(4, 4)])), L.Residual([L.Dense(4, 4)])], 6, 3),
    ([pn.Sequential([L.Residual([L.Dense(4, 4)])], seed=0), L.Dense(4, 2)], 4, 1),
], ids=["flat", "residual", "nested-residuals", "residual-in-sequential"])
def test_one_flow_arrow_between_nodes_and_one_skip_per_residual(layers, nodes, skips):
    fig = plot_model(pn.Sequential(layers, seed=0))
    assert len(arrows(fig, "flow")) == nodes - 1
    assert len(arrows(fig, "skip:")) == skips
    assert len(arrows(fig)) == nodes - 1 + skips


def test_the_skip_runs_around_the_block_into_the_add_node():
    model = pn.Sequential([L.Dense(4, 4),
                           L.Residual([L.Dense(4, 4, activation="relu"), L.Dense(4, 4)]),
                           L.Dense(4, 2)], seed=0)
    fig = plot_model(model)
    ax = fig.axes[0]
    (skip,) = arrows(fig, "skip:1")
    path = skip.get_path()  # the shaft (the first sub-path), then the arrow head
    starts = [i for i, code in enumerate(path.codes) if code == path.MOVETO]
    points = path.vertices[:starts[1]]
    boxes = {p.get_gid(): extent(p) for p in ax.patches if (p.get_gid() or "").startswith("box:")}
    (add,) = [p for p in ax.patches if p.get_gid() == "add:1"]
    before, first, last = boxes["box:0"], boxes["box:1.block.0"], boxes["box:1.block.1"]
    centre = (first[0] + first[1]) / 2
    # it leaves the flow arrow that enters the block (centre line, between Dense 0 and the block)
    assert points[0][0] == pytest.approx(centre) and before[3] < points[0][1] < first[2]
    # it passes to the right of the block's boxes
    assert points[:, 0].max() > max(first[1], last[1])
    # and ends at the add node, which sits below the block and above the next layer
    (cx, cy), r = add.center, add.radius
    assert points[-1][1] == pytest.approx(cy)
    assert cx + r <= points[-1][0] < cx + r + 4  # the shaft stops where the head begins
    assert last[3] < cy < boxes["box:2"][2]


def test_containers_are_frames_around_their_layers():
    model = pn.Sequential([
        L.Dense(4, 4),
        L.Residual([L.Dense(4, 4), pn.Sequential([L.Dense(4, 4)], seed=0)]),
        L.Chain([L.Dense(4, 4)]),
        L.Dense(4, 2),
    ], seed=0)
    fig = plot_model(model)
    ax = fig.axes[0]
    found = {p.get_gid(): extent(p) for p in frames(fig)}
    assert set(found) == {"frame:1", "frame:1.block.1", "frame:2"}
    boxes = {p.get_gid(): extent(p) for p in ax.patches if (p.get_gid() or "").startswith("box:")}

    def inside(inner, outer):
        return outer[0] < inner[0] and inner[1] < outer[1] and outer[2] < inner[2] \
            and inner[3] < outer[3]

    assert inside(boxes["box:1.block.0"], found["frame:1"])
    assert inside(found["frame:1.block.1"], found["frame:1"])
    assert inside(boxes["box:1.block.1.0"], found["frame:1.block.1"])
    assert inside(boxes["box:2.0"], found["frame:2"])
    for outside in ("box:0", "box:3"):
        assert not any(inside(boxes[outside], f) for f in found.values())
    # a Residual's frame is dashed, a plain group's solid
    styles = {p.get_gid(): p.get_linestyle() for p in frames(fig)}
    assert styles["frame:1"] != styles["frame:2"] == styles["frame:1.block.1"]


def test_bidirectional_and_transformer_are_single_boxes():
    model = pn.Sequential([
        L.Bidirectional(L.GRU(3, 2, return_sequences=True)),
        L.TransformerEncoderBlock(4, 2, 8, dropout=0.0),
        L.GlobalAvgPool1D(),
        L.Dense(4, 2),
    ], seed=0)
    fig = plot_model(model, input_shape=(5, 3))
    assert frames(fig) == []
    assert by_gid(fig, "detail:0").get_text() == "GRU(3 -> 2) both ways, concat"
    assert "2 heads" in by_gid(fig, "detail:1").get_text()
    assert [by_gid(fig, f"shape:{i}").get_text() for i in range(4)] == \
        ["(N, 5, 4)", "(N, 5, 4)", "(N, 4)", "(N, 2)"]
    assert len(arrows(fig)) == 4  # input -> 4 boxes


def test_frozen_layers_are_marked():
    model = small_model()
    model.layers[0].trainable = False
    fig = plot_model(model)
    assert by_gid(fig, "params:0").get_text() == "40 params, frozen"
    faces = {p.get_gid(): p.get_facecolor() for p in fig.axes[0].patches}
    assert faces["box:0"] != faces["box:3"]


# -- files ---------------------------------------------------------------------------------------
def test_writes_png_svg_and_pdf_by_the_suffix(tmp_path):
    model = small_model()
    magic = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<?xml", ".pdf": b"%PDF"}
    for suffix, start in magic.items():
        path = tmp_path / f"model{suffix}"
        fig = plot_model(model, path if suffix != ".svg" else str(path))
        assert isinstance(fig, Figure)
        data = path.read_bytes()
        assert data.startswith(start), suffix
    root = ET.fromstring((tmp_path / "model.svg").read_bytes())
    assert root.tag.endswith("svg")
    # a higher dpi gives a larger PNG of the same picture
    plot_model(model, tmp_path / "big.png", dpi=300)
    width = int.from_bytes((tmp_path / "big.png").read_bytes()[16:20], "big")
    assert width == pytest.approx(2 * int.from_bytes(
        (tmp_path / "model.png").read_bytes()[16:20], "big"), abs=2)


def test_path_none_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(plot_model(small_model()), Figure)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_say_what_was_received(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match=r"model\.txt.*'\.png'"):
        plot_model(model, tmp_path / "model.txt")
    assert not (tmp_path / "model.txt").exists()
    with pytest.raises(TypeError, match="received list"):
        plot_model([L.Dense(4, 2)])
    with pytest.raises(TypeError, match="show_shapes must be True or False, received 'yes'"):
        plot_model(model, show_shapes="yes")
    with pytest.raises(ValueError, match="dpi must be a positive number, received dpi=0"):
        plot_model(model, dpi=0)
    with pytest.raises(TypeError, match="path must be a file name"):
        plot_model(model, 3)
    with pytest.raises(ValueError, match=r"positive ints.*received \(0, 4\)"):
        plot_model(model, input_shape=(0, 4))
    with pytest.raises(TypeError, match="per-sample shape without the batch axis"):
        plot_model(model, input_shape="4")
    conv = pn.Sequential([L.Conv2D(1, 2, 3)], seed=0)
    with pytest.raises(ValueError):  # the layer's own shape error, as summary() raises it
        plot_model(conv, input_shape=(3, 8, 8))


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r'pip install "portanet\[plot\]"') as info:
        plot_model(small_model())
    assert "summary()" in str(info.value)  # and where the same rows are without it


def test_portanet_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; import portanet, portanet.plotting; "
            "print(portanet.plotting.summary_rows(portanet.Sequential("
            "[portanet.layers.Dense(2, 3)], seed=0))[0].label)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Dense(2 -> 3)"


# -- every backend: shapes only, no array read -------------------------------------------------
def test_plots_on_every_backend_without_reading_an_array(backend, monkeypatch, tmp_path):
    model = pn.Sequential([L.Dense(3, 4, activation="relu"), L.Residual([L.Dense(4, 4)]),
                           L.Dense(4, 2)], seed=0, dtype="float64")
    before = {k: id(v) for k, v in model.parameters().items()}

    def no_transfer(*args, **kwargs):
        raise AssertionError("plot_model moved an array to the host")

    monkeypatch.setattr(backend.backend.adapter, "to_numpy", no_transfer)
    fig = plot_model(model, tmp_path / "model.png")
    assert (tmp_path / "model.png").stat().st_size > 0
    assert [by_gid(fig, f"shape:{i}").get_text() for i in range(3)] == \
        ["(N, 4)", "(N, 4)", "(N, 2)"]
    assert [by_gid(fig, f"params:{i}").get_text() for i in range(3)] == \
        ["16 params", "20 params", "10 params"]
    assert model.backend.name == backend.name
    assert {k: id(v) for k, v in model.parameters().items()} == before
    with pytest.raises(AssertionError, match="moved an array"):  # the trap is armed
        pn.to_numpy(next(iter(model.parameters().values())))
