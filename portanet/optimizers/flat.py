"""One buffer for many parameters: an optimizer's update as one pass over all of them.

Every update rule is elementwise: each coordinate of each parameter moves by the same formula
of its own gradient and slots. So the rule can run over one long vector that holds all the
parameters back to back as well as over each array in turn, and give the same numbers (the same
operations on the same values, in the same order). What changes is the number of library calls.
Adam's rule is about a dozen array operations: per array, a 6-array MLP costs ~72 calls; on one
buffer, 12 and a concatenation of the gradients. On a GPU each call is a kernel launch of a few
microseconds, often longer than its arithmetic, so that is where this pays::

    params   [ W0 (flattened) | b0 | W1 | b1 | ... ]    one 1-D buffer; each parameter a view
    slots    one buffer per slot (m, v), laid out the same, views too
    g      = concat(flatten(g_0), flatten(g_1), ...)    one copy of the gradients per step
    buffer, slots <- update(buffer, g, slots)           the rule, once

On the host it does not pay: NumPy's and torch's CPU calls cost ~1-5 us against the memory
traffic of the gradients' copy, and the flat update measured slower there
(benchmarks/test_bench_optimizers.py, the ``+flat`` rows; docs/optimizers.md). So it is the
default where a backend says it measures faster (``Adapter.flat_update_on``: CuPy, torch on
CUDA) and a choice elsewhere (``Optimizer(flat=True)``).

The first flat update copies the parameters and slots into the buffers and returns views of
them; each later update writes into the buffers (the in-place path) or makes new ones (the
portable path, JAX, norm clipping) and returns views again. A group notices when the arrays it
is given are not its views (a checkpoint was loaded, the model was moved) and packs again.

Examples:
    >>> import numpy as np
    >>> group = FlatGroup(["w", "b"], {"w": np.ones((2, 2)), "b": np.zeros(2)})
    >>> group.flatten({"w": np.ones((2, 2)), "b": np.asarray([5.0, 6.0])}).tolist()
    [1.0, 1.0, 1.0, 1.0, 5.0, 6.0]
    >>> views = group.split(np.arange(6.0))
    >>> views["w"].tolist(), views["b"].tolist()
    ([[0.0, 1.0], [2.0, 3.0]], [4.0, 5.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import array_api_compat as compat

from .._typing import Array
from ..backend import adapter_of


class FlatGroup:
    """Arrays of one dtype on one device, laid out back to back in 1-D buffers.

    Args:
        names: the arrays of the group, in buffer order.
        likes: ``{name: array}`` of their shapes and memory layouts (the parameters).

    A 2-D array stored column by column (torch's Dense kernels, ``Adapter.weight_order``)
    keeps that layout: its segment holds its columns one after another, and its view is the
    transpose of a row-major (columns, rows) view, so the GEMMs read it as before.
    """

    def __init__(self, names: Sequence[str], likes: Mapping[str, Array]):
        self.names = tuple(names)
        self.layout = self.layout_of(self.names, likes)
        self.xp = adapter_of(likes[self.names[0]]).xp
        self.shapes = {n: shape for n, (shape, _) in zip(self.names, self.layout[3], strict=True)}
        self.column_major = {n: cm for n, (_, cm) in zip(self.names, self.layout[3], strict=True)}
        self.bounds: dict[str, tuple[int, int]] = {}
        start = 0
        for n in self.names:
            size = math.prod(self.shapes[n])
            self.bounds[n] = (start, start + size)
            start += size
        self.params: dict[str, Array] = {}  # the views last returned: the group's own
        self.slots: dict[str, dict[str, Array]] = {}
        self.buffers: tuple[Array | None, dict[str, Array]] = (None, {})
        self._gradients: Array | None = None

    @staticmethod
    def layout_of(names: Sequence[str], arrays: Mapping[str, Array]) -> tuple:
        """What a group is built for: the library, dtype and device, and each array's shape
        and memory layout."""
        first = arrays[names[0]]
        adapter = adapter_of(first)
        return (adapter.name, str(first.dtype), str(compat.device(first)),
                tuple((tuple(arrays[n].shape), adapter.column_major(arrays[n])) for n in names))

    def fits(self, params: Mapping[str, Array]) -> bool:
        """Whether this group can take ``params``: they are its views (checked first: by
        identity, nothing else to read), or arrays of the same library, dtype, device, shapes
        and layouts (then :meth:`pack` copies them in). A model moved to another device, or a
        parameter replaced by one of another shape, needs a new group."""
        if self.params and all(params[n] is self.params[n] for n in self.names):
            return True
        return self.layout_of(self.names, params) == self.layout

    def flatten(self, arrays: Mapping[str, Array]) -> Array:
        """One new 1-D array: ``arrays`` (of the group's shapes) back to back, in its layout."""
        xp = self.xp
        return xp.concat([self._row(arrays[n], n) for n in self.names])

    def flatten_gradients(self, grads: Mapping[str, Array]) -> Array:
        """:meth:`flatten` of the gradients, into a buffer the group keeps where arrays are
        writeable. A new array per step would be a fresh allocation of the whole model's size
        on every update, and on the host that costs more than the copy itself (NumPy, SGD on
        1M float32 parameters: 8.4 ms per update with a new array, 1.0 ms with a kept one:
        the allocator hands the large block back to the system and faults it in again)."""
        out = self._gradients
        if out is None or not compat.is_writeable_array(out):
            out = self.flatten(grads)
            if compat.is_writeable_array(out):
                self._gradients = out
            return out
        for n in self.names:
            start, stop = self.bounds[n]
            out[start:stop] = self._row(grads[n], n)
        return out

    def _row(self, a: Array, name: str) -> Array:
        """``a`` as one row in the group's layout (a view where it is laid out so already)."""
        return self.xp.reshape(a.mT if self.column_major[name] else a, (-1,))

    def split(self, buffer: Array) -> dict[str, Array]:
        """``{name: view}`` of the group's arrays inside ``buffer`` (no copies)."""
        xp = self.xp
        views = {}
        for n in self.names:
            start, stop = self.bounds[n]
            shape = self.shapes[n]
            if self.column_major[n]:
                views[n] = xp.reshape(buffer[start:stop], shape[::-1]).mT
            else:
                views[n] = xp.reshape(buffer[start:stop], shape)
        return views

    def pack(self, params: Mapping[str, Array],
             slots: Mapping[str, Mapping[str, Array]]) -> tuple[Array, dict[str, Array]]:
        """The buffers of ``params`` and their ``slots`` ({param: {slot: array}}): the group's
        own where every array is the view it returned last, else new ones (a copy)."""
        held_p, held_s = self.buffers
        if held_p is None or any(params[n] is not self.params[n] for n in self.names):
            held_p = self.flatten(params)
        slot_names = slots[self.names[0]].keys()
        buffers = {}
        for k in slot_names:
            own = held_s.get(k)
            if own is None or any(slots[n][k] is not self.slots[n][k] for n in self.names):
                own = self.flatten({n: slots[n][k] for n in self.names})
            buffers[k] = own
        return held_p, buffers

    def unpack(self, buffer: Array, slot_buffers: Mapping[str, Array]
               ) -> tuple[dict[str, Array], dict[str, dict[str, Array]]]:
        """Views of the updated buffers, ``({param: view}, {param: {slot: view}})``; they are
        the group's own from now on (the next :meth:`pack` finds them).

        Only writeable buffers are kept: JAX's arrays are replaced on every update anyway, and
        under ``jax.jit`` they are tracers, which must not outlive the trace."""
        if not compat.is_writeable_array(buffer):
            views = self.split(buffer)
            slot_views = {k: self.split(b) for k, b in slot_buffers.items()}
            self.params, self.slots, self.buffers = {}, {}, (None, {})
            return views, {n: {k: v[n] for k, v in slot_views.items()} for n in self.names}
        held_p, held_s = self.buffers
        if buffer is not held_p:
            self.params = self.split(buffer)
        for k, b in slot_buffers.items():
            if b is not held_s.get(k):
                views = self.split(b)
                for n in self.names:
                    self.slots.setdefault(n, {})[k] = views[n]
        for n in self.names:
            self.slots.setdefault(n, {})
        self.buffers = (buffer, dict(slot_buffers))
        return dict(self.params), {n: dict(self.slots[n]) for n in self.names}
