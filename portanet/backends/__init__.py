"""Backend adapters, one small module per library. The only place that imports them by name."""

from __future__ import annotations

from ._adapter import Adapter
from .array_api_strict import ArrayApiStrictAdapter
from .cupy import CupyAdapter
from .jax import JaxAdapter
from .numpy import NumpyAdapter
from .torch import TorchAdapter

ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (NumpyAdapter(), CupyAdapter(), TorchAdapter(), JaxAdapter(), ArrayApiStrictAdapter())
}

__all__ = ["ADAPTERS", "Adapter"]
