"""The training step as one pure function of data.

::

    loss, grads, buffers, rng = loss_and_gradients(arrays, x, y)    forward, loss, backward
    params, slots = apply_gradients(params, slots, grads, scalars)   the optimizer's update
    train_step = the two in a row: (arrays, x, y, scalars) -> (loss, new arrays)

``arrays`` is :meth:`TrainState.arrays`: (params, slots, buffers, rng), dicts of arrays and
nothing else. ``scalars`` are the optimizer's host floats for this update (the learning rate,
bias corrections: :meth:`Optimizer.scalars`), arguments rather than constants so that a
compiled step is compiled once. The functions read no array value on the host and mutate
nothing that outlives them (the model's layers are borrowed through :meth:`StateLayout.bound`
and given back), so ``jax.jit`` can trace them and every executor runs the same code. Between
the two halves a data-parallel step averages the gradients across processes
(:mod:`portanet.distributed`).

Examples:
    >>> import numpy as np, portanet as pn
    >>> from portanet.engine import StateLayout, make_train_step
    >>> model = pn.Sequential([pn.layers.Dense(2, 1)], loss="mse", optimizer="sgd", seed=0)
    >>> layout = StateLayout(model)
    >>> state = layout.gather(model.optimizer)
    >>> step = make_train_step(model, layout)
    >>> x, y = np.ones((4, 2), dtype=np.float32), np.zeros((4, 1), dtype=np.float32)
    >>> loss, arrays = step(state.arrays(), x, y, model.optimizer.scalars(state.opt.step))
    >>> sorted(arrays[0])
    ['0.bias', '0.kernel']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._typing import Array
from ..optimizers.base import OptState
from .state import StateLayout, TrainState

__all__ = ["make_apply_gradients", "make_forward", "make_loss_and_gradients", "make_train_step"]

Arrays = tuple[dict, dict, dict, dict]


def make_loss_and_gradients(model: Any, layout: StateLayout,
                            augment: Callable[[Array], Array] | None = None,
                            traced: bool = True) -> Callable:
    """``(arrays, x, y) -> (loss, grads, buffers, rng)`` for ``model`` in training mode.

    ``augment`` (a ``pn.data.Augment``) transforms ``x`` first, inside the step, so its
    random draws come from the threaded keys too. ``traced=False`` (eager) leaves the step's
    gradients in the layers (``model.gradients()``).
    """

    def loss_and_gradients(arrays: Arrays, x: Array, y: Array):
        params, slots, buffers, rng = arrays
        with layout.bound(TrainState(params, OptState(0, slots), buffers, rng),
                          restore_gradients=traced):
            if augment is not None:
                x = augment(x)
            loss, grads = model.value_and_gradients(x, y, training=True)
            new_buffers, new_rng = layout.read()
        return loss, grads, new_buffers, new_rng

    return loss_and_gradients


def make_apply_gradients(model: Any, traced: bool = True, compiled: bool | None = None
                         ) -> Callable:
    """``(params, slots, grads, scalars) -> (params, slots)``: ``model.optimizer``'s update.

    ``traced=False`` (eager) updates writeable arrays in place (the optimizer's ``inplace``
    capability, bit-identical to the pure form); under a compiler every array is a value.
    ``compiled`` (default: ``traced``; True for a CUDA graph, which records an untraced step)
    updates one array at a time: the optimizer's flat buffer saves kernel launches, which a
    compiler or a graph has saved already, and its Python-side bookkeeping would make
    torch.compile guard on every array's identity.
    """
    inplace = None if not traced else False
    flat = False if (traced if compiled is None else compiled) else None
    optimizer = model.optimizer

    def apply_gradients(params: dict, slots: dict, grads: dict, scalars: dict[str, Any]):
        # the step count is host data: scalars already hold what it determines
        params, opt = optimizer.update(grads, OptState(0, slots), params, scalars, inplace,
                                       flat)
        return params, opt.slots

    return apply_gradients


def make_train_step(model: Any, layout: StateLayout,
                    augment: Callable[[Array], Array] | None = None,
                    traced: bool = True, compiled: bool | None = None) -> Callable:
    """``(arrays, x, y, scalars) -> (loss, new arrays)``: one step of ``model.optimizer``.

    ``traced=False`` is the eager executor's: writeable arrays are updated in place and the
    gradients stay in the layers. Under a compiler every array is a value, updated by rebinding.
    ``compiled``: see :func:`make_apply_gradients`.
    """
    loss_and_gradients = make_loss_and_gradients(model, layout, augment, traced)
    apply_gradients = make_apply_gradients(model, traced, compiled)

    def train_step(arrays: Arrays, x: Array, y: Array, scalars: dict[str, Any]):
        loss, grads, buffers, rng = loss_and_gradients(arrays, x, y)
        params, slots = apply_gradients(arrays[0], arrays[1], grads, scalars)
        return loss, (params, slots, buffers, rng)

    return train_step


def make_forward(model: Any, layout: StateLayout) -> Callable:
    """``(params, buffers, x) -> y``: the model in evaluation mode, as a function of data."""

    def forward(params: dict, buffers: dict, x: Array) -> Array:
        with layout.bound(TrainState(params, OptState(0, {}), buffers, {})):
            y, _ = model._forward(x, False)
        return y

    return forward
