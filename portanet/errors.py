"""portanet's exception types: each message says what was received, what was expected, the fix."""


class BackendError(ValueError):
    """An unknown backend name, a backend that is not installed, or one without a usable device."""


class DeviceError(ValueError):
    """A device string that the chosen backend does not have."""


class MixedArraysError(TypeError):
    """Arrays from different namespaces or devices were combined; portanet never copies silently."""


def abridged(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut at ``limit`` characters: messages quote what they received, but a
    hostile file must not make an error message megabytes long.

    Examples:
        >>> abridged([0] * 1000, limit=20)
        '[0, 0, 0, 0, 0, 0, 0... (3000 characters)'
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
