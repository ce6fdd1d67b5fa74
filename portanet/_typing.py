"""The few type aliases portanet uses. Arrays and namespaces are duck-typed by the standard."""

from __future__ import annotations

from types import ModuleType
from typing import Any

Array = Any
"""An array of any namespace that follows the Python array API standard."""

Namespace = ModuleType
"""An array API namespace (``numpy``, ``array_api_compat.torch``, ``array_api_strict``, ...)."""

Device = Any
"""A namespace's native device object (``"cpu"``, ``torch.device("cuda:0")``, ...)."""

Shape = tuple[int, ...]
