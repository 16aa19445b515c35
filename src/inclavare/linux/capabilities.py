"""Capability sets as bit masks, and what of a spec's sets this kernel knows."""

from __future__ import annotations

from inclavare.linux.constants import CAPABILITIES


def last_capability() -> int:
    """The highest capability number the running kernel defines."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as last:
            return int(last.read())
    except OSError:
        return max(CAPABILITIES.values())


def mask(names: list[str], last: int) -> int:
    """The bit mask of the named capabilities that exist on a kernel whose last is `last`."""
    bits = 0
    for name in names:
        number = CAPABILITIES[name]
        if number <= last:
            bits |= 1 << number
    return bits


def unsupported(names: list[str]) -> list[str]:
    """The names this kernel does not define (they are ignored, with a warning)."""
    last = last_capability()
    return sorted({name for name in names if CAPABILITIES[name] > last})
