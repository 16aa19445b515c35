"""The cgroup package's error type, in a module of its own so that every driver can raise it
without importing the package's other modules."""

from __future__ import annotations

from inclavare.errors import InclavareError


class CgroupError(InclavareError):
    """A cgroup could not be created, configured, joined, read or removed."""
