"""A picture of a model: its layers as boxes, the data flow as arrows, residual skips around.

``plot_model(model, path)`` draws, top to bottom, what ``model.summary()`` lists::

    input (N, 8)
         |
    Dense(8 -> 8, relu)          one box per layer: summary's label,
    (N, 8)        72 params      its output shape and its parameter count
         |
    +- Residual ----- 144 ---+   a container is a framed group of its layers;
    |    Dense(8 -> 8, relu) |   a Residual's skip arrow leaves where the block's
    |    Dense(8 -> 8)    ---+-. input enters and runs around the block into an
    |        (+) <-------------'  add node: y = x + block(x)
    +------------------------+
         |
    Dense(8 -> 3)

**The table and the picture are one list of rows** (:func:`summary_rows`): the label
(:func:`describe`), the output shape and the parameter count of every layer, so the two agree
by construction. Containers: a Chain or a nested Sequential is a framed group of its layers; a
Residual is a framed group of its block with the skip arrow and the add node; a Bidirectional
and a TransformerEncoderBlock are single boxes (their children do not run one after the other:
two directions side by side, two residual branches), with one extra line that says what is
inside. Every other layer is one box.

**Shapes only.** The rows come from ``layer.output_shape`` and the parameter specs, never from
an array, so a model plots the same on every backend and device and nothing is moved to the host.

**matplotlib is optional** (``pip install "portanet[plot]"``) and imported only when a picture is
drawn. The figure is made without pyplot, so plotting leaves the user's matplotlib backend and
open figures alone; in a notebook the returned Figure displays itself.

This module sits on floor 5, just below ``model.py``: ``Sequential.summary`` and
``Sequential.plot`` are built on it, so it imports layers only.

Examples:
    >>> import portanet as pn
    >>> from portanet.plotting import summary_rows
    >>> model = pn.Sequential([pn.layers.Dense(4, 8, activation="relu"),
    ...                        pn.layers.Residual([pn.layers.Dense(8, 8)]),
    ...                        pn.layers.Dense(8, 3)], seed=0)
    >>> for row in summary_rows(model):
    ...     print(row.index, row.label, row.shape_text, row.params_text)
    0 Dense(4 -> 8, relu) (N, 8) 40
    1 Residual (N, 8) 72
    2 Dense(8 -> 3) (N, 3) 27
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from ._typing import Shape
from .errors import abridged
from .layers.base import Layer
from .layers.bidirectional import Bidirectional
from .layers.chain import Chain
from .layers.preprocessing import Standardize
from .layers.residual import Residual
from .layers.transformer import TransformerEncoderBlock

__all__ = ["LayerRow", "describe", "guess_input_shape", "layer_rows", "plot_model",
           "summary_rows"]

UNKNOWN_SHAPE = "? (pass input_shape)"
"""What a row shows for its output shape when the model's input shape is not known."""


# -- the rows that summary() prints and plot_model() draws ---------------------------------------
class LayerRow(NamedTuple):
    """One row of ``model.summary()``: what the table prints and the picture draws.

    Attributes:
        index: the layer's position, dotted inside containers as in parameter names
            ("1", "1.block.0").
        label: the class and its key arguments, e.g. "Dense(784 -> 10, relu)" (:func:`describe`).
        input_shape: the per-sample input shape (no batch axis), None when unknown.
        output_shape: the per-sample output shape, None when unknown.
        params: the layer's parameter count (a container's: everything inside it).
        layer: the layer itself.
    """

    index: str
    label: str
    input_shape: Shape | None
    output_shape: Shape | None
    params: int
    layer: Layer

    @property
    def shape_text(self) -> str:
        """The output shape with N for the batch axis, e.g. "(N, 10)"."""
        return _shape_text(self.output_shape)

    @property
    def params_text(self) -> str:
        """The parameter count with thousands separators, e.g. "7,850"."""
        return f"{self.params:,}"


def _shape_text(shape: Shape | None) -> str:
    return UNKNOWN_SHAPE if shape is None else str((None, *shape)).replace("None", "N")


def describe(layer: Layer) -> str:
    """A short row label: the class and its key arguments, e.g. "Dense(784 -> 10, relu)".

    A layer given a ``name`` shows it first: "encoder (Sequential)".
    """
    kind = type(layer).__name__
    if layer.name:
        return f"{layer.name} ({kind})"
    if hasattr(layer, "in_features"):
        act = getattr(layer, "activation", None)
        return f"{kind}({layer.in_features} -> {layer.out_features}" + \
            (f", {act.name})" if act is not None else ")")
    if hasattr(layer, "hidden_size") and hasattr(layer, "input_size"):
        return f"{kind}({layer.input_size} -> {layer.hidden_size})"
    if hasattr(layer, "in_channels"):
        k = layer.kernel_size
        return f"Conv2D({layer.in_channels} -> {layer.out_channels}, {k[0]}x{k[1]})"
    return layer.kind


def guess_input_shape(model: Layer) -> Shape | None:
    """The per-sample input shape when the model can tell, else None.

    The first leaf layer's ``in_features`` (Dense, Maxout: ``(in_features,)``), looking past a
    leading ``Standardize`` (it keeps the shape: ``portanet train`` saves models that start with
    one), or that Standardize's own statistics shape when it shares no axis; otherwise the shape
    the model's last forward pass saw (``Sequential`` remembers it).
    """
    leaves = [leaf for _, leaf in model.named_leaves()] if model.is_container else [model]
    first = leaves[0] if leaves else None
    if isinstance(first, Standardize):
        after = leaves[1] if len(leaves) > 1 else None
        if hasattr(after, "in_features"):
            return (after.in_features,)
        if 1 not in first.shape:  # per-entry statistics: their shape is the sample's
            return tuple(first.shape)
    elif first is not None and hasattr(first, "in_features"):
        return (first.in_features,)
    return getattr(model, "_seen_input_shape", None)


def _check_shape(input_shape: Any) -> Shape:
    """A per-sample shape as a tuple of Python ints, or a clear error."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape is the per-sample shape without the batch axis, e.g. "
                        f"(1, 28, 28) or (784,); received {abridged(input_shape)}.")
    shape = []
    for size in input_shape:
        try:
            size = operator.index(size)
        except TypeError:
            size = -1
        if size < 1:
            raise ValueError(f"input_shape must hold positive ints (the per-sample shape "
                             f"without the batch axis, e.g. (1, 28, 28)); received "
                             f"{abridged(input_shape)}.")
        shape.append(size)
    return tuple(shape)


def layer_rows(layers: Any, input_shape: Shape | None, prefix: str = "") -> list[LayerRow]:
    """One row per layer, the shapes carried from each layer to the next.

    Args:
        layers: the layers, in order (a Chain's ``layers``).
        input_shape: the per-sample shape entering the first layer; None: every shape unknown.
        prefix: prepended to each index ("1.block." for the layers of a Residual's block).

    Raises:
        ValueError: a layer does not accept the shape it receives (``layer.output_shape``'s
            message says which and why).
    """
    shape = None if input_shape is None else tuple(input_shape)
    rows = []
    for i, layer in enumerate(layers):
        out = None if shape is None else tuple(layer.output_shape(shape))
        rows.append(LayerRow(f"{prefix}{i}", describe(layer), shape, out,
                             layer.num_parameters, layer))
        shape = out
    return rows


def summary_rows(model: Layer, input_shape: Any = None) -> list[LayerRow]:
    """The rows of ``model.summary()``: one per layer of the model's top level.

    Args:
        model: a Sequential or Chain (one row per layer), or any single layer (one row).
        input_shape: the per-sample input shape, e.g. (1, 28, 28); None:
            :func:`guess_input_shape`, and unknown shapes where it cannot tell.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary rows are of a portanet model or layer, received "
                        f"{type(model).__name__}. Pass a pn.Sequential.")
    shape = _check_shape(input_shape) if input_shape is not None else guess_input_shape(model)
    layers = model.layers if isinstance(model, Chain) else [model]
    return layer_rows(layers, shape)


def _inner_rows(row: LayerRow) -> list[LayerRow] | None:
    """The rows a container is drawn with inside its frame, or None: drawn as one box."""
    layer = row.layer
    if isinstance(layer, Residual):
        block = layer.block
        if isinstance(block, Chain):  # Residual([...]) wraps its list in a Chain: show the list
            return layer_rows(block.layers, row.input_shape, f"{row.index}.block.")
        (inner,) = layer_rows([block], row.input_shape)
        return [inner._replace(index=f"{row.index}.block")]
    if isinstance(layer, Chain):
        return layer_rows(layer.layers, row.input_shape, f"{row.index}.")
    return None


def _detail(layer: Layer) -> str | None:
    """One more line for the containers drawn as single boxes: what they hold."""
    if isinstance(layer, Bidirectional):
        return f"{describe(layer.forward_layer)} both ways, {layer.merge_mode}"
    if isinstance(layer, TransformerEncoderBlock):
        return (f"pre-LN, E={layer.embed_dim}, {layer.num_heads} heads, "
                f"feed-forward {layer.ff_dim}")
    return None


# -- the picture ---------------------------------------------------------------------------------
# Every length is in points (1/72 inch): the axes span the whole figure with one data unit per
# point, y growing downwards, so a 9 pt font is 9 data units tall at every dpi.
_FONT, _SMALL = 9.0, 8.0          # label font; shape and parameter font
_LINE, _SMALL_LINE = 12.0, 11.0   # their line heights
_PAD_X, _PAD_Y = 8.0, 4.0         # inside a box, around its text
_GAP = 16.0                       # between two nodes: where a flow arrow runs
_MARGIN = 8.0                     # inside a frame, around its layers
_LANE = 18.0                      # beside a residual's block: where its skip arrow runs
_CLEAR = 8.0                      # kept free either side of the centre line (the flow arrows)
_ADD_R = 6.0                      # radius of an add node
_OUTER = 10.0                     # around the whole drawing

_BOX_FACE, _BOX_EDGE, _FROZEN_FACE = "#e8eef7", "#3b5b8c", "#e6e6e6"
_GROUP_FACE, _GROUP_EDGE = "#f6f6f6", "#8a8a8a"
_RESIDUAL_FACE, _RESIDUAL_EDGE = "#fdf5ec", "#b5651d"
_ARROW, _DIM = "#333333", "#505050"


@dataclass
class _Item:
    """A row as drawn: a box (children None) or a framed group of items."""

    row: LayerRow
    children: list[_Item] | None
    residual: bool = False
    detail: str | None = None
    half: float = 0.0   # half its width, set by the layout
    inner: float = 0.0  # a group's: half the width of its widest child


def _tree(rows: list[LayerRow]) -> list[_Item]:
    items = []
    for row in rows:
        inner = _inner_rows(row)
        items.append(_Item(row, None if inner is None else _tree(inner),
                           residual=isinstance(row.layer, Residual), detail=_detail(row.layer)))
    return items


def _matplotlib() -> SimpleNamespace:
    """The few matplotlib classes the picture needs, or an error that says how to get them."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
        from matplotlib.backends.backend_agg import RendererAgg
        from matplotlib.figure import Figure
        from matplotlib.font_manager import FontProperties
        from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
        from matplotlib.path import Path as MplPath
    except ImportError as error:
        raise ImportError('plot_model needs matplotlib: pip install "portanet[plot]" (or pip '
                          'install matplotlib). model.summary() gives the same rows as text.'
                          ) from error
    return SimpleNamespace(FigureCanvasBase=FigureCanvasBase, RendererAgg=RendererAgg,
                           Figure=Figure, FontProperties=FontProperties, Circle=Circle,
                           FancyArrowPatch=FancyArrowPatch, FancyBboxPatch=FancyBboxPatch,
                           Path=MplPath)


class _Painter:
    """Lays the items out (widths bottom-up, then positions top-down) and draws them."""

    def __init__(self, mpl: SimpleNamespace, show_shapes: bool, show_params: bool):
        self.mpl = mpl
        self.show_shapes, self.show_params = show_shapes, show_params
        # measured at 720 dpi, a tenth of a point a pixel: at low resolutions font hinting
        # rounds the widths (bold and regular come out alike at 72 dpi)
        self._renderer = mpl.RendererAgg(1, 1, 720)
        self.nodes: list[tuple[float, float]] = []      # (top, bottom) in data-flow order
        self.ops: list[tuple] = []                      # what to draw, once the size is known

    # -- measuring ---------------------------------------------------------------------------
    def width(self, text: str, size: float, bold: bool = False) -> float:
        prop = self.mpl.FontProperties(size=size, weight="bold" if bold else "normal")
        w, _, _ = self._renderer.get_text_width_height_descent(text, prop, ismath=False)
        return w / 10

    def second_line(self, shape: str, params: str) -> tuple[str, str]:
        return (shape if self.show_shapes else "", params if self.show_params else "")

    def box_width(self, label: str, detail: str | None, shape: str, params: str) -> float:
        shape, params = self.second_line(shape, params)
        line2 = self.width(shape, _SMALL) + self.width(params, _SMALL) + 2 * _PAD_X
        widths = [self.width(label, _FONT), line2]
        if detail:
            widths.append(self.width(detail, _SMALL))
        return max(widths) + 2 * _PAD_X

    def box_height(self, detail: str | None) -> float:
        lines = _LINE + (_SMALL_LINE if detail else 0.0)
        if self.show_shapes or self.show_params:
            lines += _SMALL_LINE
        return lines + 2 * _PAD_Y

    def header_height(self) -> float:
        return _PAD_Y + _LINE + (_SMALL_LINE if self.show_shapes else 0.0) + _PAD_Y

    def measure(self, items: list[_Item], box_half: float) -> float:
        """Set each item's half width (boxes: ``box_half``); return the widest half."""
        widest = 0.0
        for item in items:
            if item.children is None:
                item.half = box_half
            else:
                inner = max(self.measure(item.children, box_half), _ADD_R if item.residual
                            else 0.0)
                half = inner + _MARGIN + (_LANE if item.residual else 0.0)
                # the header's two columns stay clear of the flow arrow through the centre
                left = max(self.width(item.row.label, _FONT, bold=True),
                           self.width(item.row.shape_text, _SMALL) if self.show_shapes else 0)
                right = self.width(_params_label(item.row), _SMALL) if self.show_params else 0
                item.half = max(half, _PAD_X + max(left, right) + _CLEAR)
                item.inner = inner
            widest = max(widest, item.half)
        return widest

    # -- placing (y grows downwards) ---------------------------------------------------------
    def box(self, x: float, y: float, half: float, label: str, detail: str | None,
            shape: str, params: str, gid: str, frozen: bool = False) -> float:
        h = self.box_height(detail)
        self.ops.append(("box", x - half, y, 2 * half, h, frozen, gid))
        self.ops.append(("text", x, y + _PAD_Y, label, _FONT, "center", "normal", "k",
                         f"label:{gid}"))
        line = y + _PAD_Y + _LINE
        if detail:
            self.ops.append(("text", x, line, detail, _SMALL, "center", "normal", _DIM,
                             f"detail:{gid}"))
            line += _SMALL_LINE
        shape, params = self.second_line(shape, params)
        if shape:
            self.ops.append(("text", x - half + _PAD_X, line, shape, _SMALL, "left", "normal",
                             _DIM, f"shape:{gid}"))
        if params:
            self.ops.append(("text", x + half - _PAD_X, line, params, _SMALL, "right",
                             "normal", _DIM, f"params:{gid}"))
        self.nodes.append((y, y + h))
        return h

    def place(self, items: list[_Item], x: float, y: float, depth: int) -> float:
        """Place ``items`` from ``y`` down; return the y below the last one and its gap."""
        for item in items:
            row = item.row
            if item.children is None:
                h = self.box(x, y, item.half, row.label, item.detail, row.shape_text,
                             _params_label(row), row.index, frozen=not row.layer.trainable)
                y += h + _GAP
            else:
                y = self.group(item, x, y, depth)
        return y

    def group(self, item: _Item, x: float, top: float, depth: int) -> float:
        row, half = item.row, item.half
        self.ops.append(("text", x - half + _PAD_X, top + _PAD_Y, row.label, _FONT, "left",
                         "bold", "k", f"label:{row.index}"))
        if self.show_shapes:
            self.ops.append(("text", x - half + _PAD_X, top + _PAD_Y + _LINE, row.shape_text,
                             _SMALL, "left", "normal", _DIM, f"shape:{row.index}"))
        if self.show_params:
            self.ops.append(("text", x + half - _PAD_X, top + _PAD_Y, _params_label(row),
                             _SMALL, "right", "normal", _DIM, f"params:{row.index}"))
        head = top + self.header_height()
        y = self.place(item.children, x, head + _GAP, depth + 1)
        if item.residual:
            # y = x + block(x): the skip leaves the arrow that enters the block and joins the
            # block's output in the add node
            centre = y + _ADD_R
            fork = head + 0.4 * _GAP
            lane = x + item.inner + 0.5 * _LANE
            self.ops.append(("add", x, centre, f"add:{row.index}"))
            self.ops.append(("skip", [(x, fork), (lane, fork), (lane, centre),
                                      (x + _ADD_R, centre)], f"skip:{row.index}"))
            self.nodes.append((centre - _ADD_R, centre + _ADD_R))
            y = centre + _ADD_R + _GAP
        bottom = y - _GAP + _MARGIN
        self.ops.append(("frame", x - half, top, 2 * half, bottom - top, item.residual, depth,
                         f"frame:{row.index}"))
        return bottom + _GAP

    # -- drawing -----------------------------------------------------------------------------
    def draw(self, ax: Any, x: float) -> None:
        mpl = self.mpl
        for op in self.ops:
            kind = op[0]
            if kind == "box":
                _, x0, y0, w, h, frozen, gid = op
                ax.add_patch(mpl.FancyBboxPatch(
                    (x0, y0), w, h, boxstyle="round,pad=0,rounding_size=3",
                    facecolor=_FROZEN_FACE if frozen else _BOX_FACE, edgecolor=_BOX_EDGE,
                    linewidth=0.9, zorder=3, gid=f"box:{gid}"))
            elif kind == "frame":
                _, x0, y0, w, h, residual, depth, gid = op
                ax.add_patch(mpl.FancyBboxPatch(
                    (x0, y0), w, h, boxstyle="round,pad=0,rounding_size=5",
                    facecolor=_RESIDUAL_FACE if residual else _GROUP_FACE,
                    edgecolor=_RESIDUAL_EDGE if residual else _GROUP_EDGE,
                    linestyle="--" if residual else "-", linewidth=0.9,
                    zorder=1 + 0.01 * depth, gid=gid))
            elif kind == "text":
                _, tx, ty, s, size, ha, weight, color, gid = op
                ax.text(tx, ty, s, fontsize=size, ha=ha, va="top", fontweight=weight,
                        color=color, zorder=4, gid=gid, parse_math=False)
            elif kind == "add":
                _, cx, cy, gid = op
                ax.add_patch(mpl.Circle((cx, cy), _ADD_R, facecolor="white",
                                           edgecolor=_RESIDUAL_EDGE, linewidth=0.9, zorder=3,
                                           gid=gid))
                ax.text(cx, cy, "+", fontsize=_FONT, ha="center", va="center_baseline",
                        color=_RESIDUAL_EDGE, zorder=4, gid=gid, parse_math=False)
            elif kind == "skip":
                _, points, gid = op
                ax.add_patch(mpl.Circle(points[0], 1.8, color=_RESIDUAL_EDGE, zorder=2.5,
                                           gid=f"fork:{gid}"))
                path = mpl.Path(points)
                ax.add_patch(mpl.FancyArrowPatch(
                    path=path, arrowstyle="-|>", mutation_scale=8, color=_RESIDUAL_EDGE,
                    linewidth=1.0, zorder=2, gid=gid))
        for (_, bottom), (top, _) in pairwise(self.nodes):
            ax.add_patch(mpl.FancyArrowPatch(
                (x, bottom), (x, top), arrowstyle="-|>", mutation_scale=8, shrinkA=0,
                shrinkB=0, color=_ARROW, linewidth=1.0, zorder=2, gid="flow"))


def _params_label(row: LayerRow) -> str:
    frozen = "" if row.layer.trainable or row.params == 0 else ", frozen"
    return f"{row.params_text} params{frozen}"


def plot_model(model: Layer, path: Any = None, input_shape: Any = None, show_shapes: bool = True,
               show_params: bool = True, dpi: float = 150) -> Any:
    """Draw ``model`` top to bottom: a box per layer, arrows for the data flow.

    Each box shows the layer's row of ``model.summary()``: its label (class and key
    arguments), its output shape and its parameter count. A nested Chain or Sequential is a
    framed group; a Residual is a dashed frame around its block with the skip arrow running
    from the block's input into an add node (y = x + block(x)); a Bidirectional and a
    TransformerEncoderBlock are single boxes with a line saying what they hold. Frozen layers
    are grey. Only shapes are read, never arrays, so any backend and device plots the same.

    Args:
        model: a ``pn.Sequential`` (or Chain, or a single layer).
        path: where to write the picture; its suffix picks the format (".png", ".svg", ".pdf",
            or another that matplotlib writes). None: only return the figure.
        input_shape: the per-sample input shape, e.g. (1, 28, 28); needed for the shapes unless
            the first layer is Dense (or the model has seen data).
        show_shapes: write each layer's output shape.
        show_params: write each layer's parameter count.
        dpi: pixels per inch of raster formats (PNG); the layout itself is in points.

    Returns:
        The ``matplotlib.figure.Figure`` (made without pyplot: it does not show a window;
        in a notebook it displays itself).

    Raises:
        ImportError: matplotlib is not installed (``pip install "portanet[plot]"``).
        ValueError: a layer does not accept the shape it receives, or the path's suffix is not
            a format matplotlib writes.

    Examples:
        >>> import portanet as pn
        >>> model = pn.Sequential([pn.layers.Dense(4, 8, activation="relu"),
        ...                        pn.layers.Dense(8, 3)], seed=0)
        >>> fig = plot_model(model)                       # doctest: +SKIP
        >>> plot_model(model, "model.svg", dpi=200)       # doctest: +SKIP
    """
    if not isinstance(model, Layer):
        raise TypeError(f"plot_model draws a portanet model or layer, received "
                        f"{type(model).__name__}. Pass a pn.Sequential.")
    for name, flag in (("show_shapes", show_shapes), ("show_params", show_params)):
        if not isinstance(flag, bool):
            raise TypeError(f"plot_model {name} must be True or False, received {flag!r}.")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise ValueError(f"plot_model dpi must be a positive number, received dpi={dpi!r}.")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"plot_model path must be a file name such as 'model.png' or None, "
                        f"received {type(path).__name__}.")
    rows = summary_rows(model, input_shape)  # before matplotlib: shape errors come first
    mpl = _matplotlib()
    fmt = None
    if path is not None:
        fmt = Path(path).suffix.lower().lstrip(".")
        formats = mpl.FigureCanvasBase.get_supported_filetypes()
        if fmt not in formats:
            raise ValueError(f"plot_model writes the format its path's suffix names; received "
                             f"{os.fspath(path)!r}, expected one of "
                             f"{sorted('.' + f for f in formats)} (e.g. 'model.png').")

    painter = _Painter(mpl, show_shapes, show_params)
    items = _tree(rows)
    start = rows[0].input_shape if rows else (
        _check_shape(input_shape) if input_shape is not None else guess_input_shape(model))
    start_text = _shape_text(start)
    boxes = [("input", None, start_text, "")]
    stack = list(items)
    while stack:
        item = stack.pop()
        if item.children is None:
            boxes.append((item.row.label, item.detail, item.row.shape_text,
                          _params_label(item.row)))
        else:
            stack += item.children
    box_half = max(painter.box_width(*b) for b in boxes) / 2
    half = max(box_half, painter.measure(items, box_half))
    title = f"{model.name or type(model).__name__}: {model.num_parameters:,} parameters"
    width = 2 * _OUTER + max(2 * half, painter.width(title, _FONT, bold=True))
    x = width / 2

    painter.ops.append(("text", x, _OUTER, title, _FONT, "center", "bold", "k", "title"))
    y = _OUTER + _LINE + _GAP / 2
    y += painter.box(x, y, box_half, "input", None, start_text, "", "input") + _GAP
    y = painter.place(items, x, y, depth=0)
    height = y - _GAP + _OUTER

    fig = mpl.Figure(figsize=(width / 72, height / 72), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards: the data flows top to bottom
    ax.set_axis_off()
    painter.draw(ax, x)
    if path is not None:
        fig.savefig(path, format=fmt, dpi=dpi)
    return fig
