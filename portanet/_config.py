"""A small base for objects described by their constructor arguments (initializers,
regularizers): ``get_config``, ``repr``, equality and hashing all come from ``_config()``."""

from __future__ import annotations


class Configurable:
    """Subclasses return their constructor arguments from ``_config()``; the rest follows."""

    def _config(self) -> dict:
        return {}

    def get_config(self) -> dict:
        """JSON-able description: ``{"class_name": ..., "config": {...}}``."""
        return {"class_name": type(self).__name__, "config": dict(self._config())}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self._config().items()))))
