"""portanet's exception types: each message says what was received, what was expected, the fix."""


class BackendError(ValueError):
    """An unknown backend name, a backend that is not installed, or one without a usable device."""


class DeviceError(ValueError):
    """A device string that the chosen backend does not have."""


class MixedArraysError(TypeError):
    """Arrays from different namespaces or devices were combined; portanet never copies silently."""
