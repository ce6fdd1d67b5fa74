"""The training engine: the training step as one pure function, run by an executor.

::

    state = TrainState(params, opt, buffers, rng)          dicts of arrays (state.py)
    loss, state = step(state, x, y)                        no mutation, no host read (step.py)
    step = executor(step)      eager | jax.jit (donated state) | torch.compile (executors.py)

:class:`Engine` (engine.py) connects a ``Sequential`` to this: it gathers the model's arrays
into a state, runs the step, and hands the new arrays back, so the model object stays the
place where users, callbacks and checkpoints find them. ``jit_compile="auto" | True | False``
on ``Sequential``, ``compile`` and ``fit`` chooses the executor.
"""

from .engine import Engine
from .executors import Compiled, Eager, check_jit_compile, resolve
from .state import StateLayout, TrainState, bound
from .step import make_apply_gradients, make_forward, make_loss_and_gradients, make_train_step

__all__ = ["Compiled", "Eager", "Engine", "StateLayout", "TrainState", "bound",
           "check_jit_compile", "make_apply_gradients", "make_forward", "make_loss_and_gradients",
           "make_train_step", "resolve"]
