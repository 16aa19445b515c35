"""Errors of the simulated TEE. Each is a one-line message naming the problem."""

from __future__ import annotations

from inclavare.errors import InclavareError


class SimError(InclavareError):
    """A problem with an input of the simulated TEE."""


class MalformedStructure(SimError):
    """Bytes that should hold a structure of the simulated TEE do not (size, magic, field)."""


class SignatureInvalid(SimError):
    """An enclave signature does not verify, or its key is not usable for enclave signing."""


class LaunchRefused(SimError):
    """The enclave may not be launched: its signature or measurement does not match."""


class ReportInvalid(SimError):
    """A local report's MAC does not verify for the given target."""


class SealError(SimError):
    """Sealed data cannot be unsealed by this enclave on this platform."""


class PlatformError(SimError):
    """The platform identity cannot be created or read."""
