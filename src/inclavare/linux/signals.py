"""Signal names as runc's users write them: "TERM", "SIGTERM", "sigkill", "9", "RTMIN+3"."""

from __future__ import annotations

from inclavare.errors import InclavareError
from inclavare.linux.constants import SIGNALS, SIGRTMAX, SIGRTMIN


def parse_signal(text: str) -> int:
    """Return the signal number that `text` names; InclavareError when it names none."""
    if text.isdigit():
        number = int(text)
        if 0 < number <= SIGRTMAX:
            return number
        raise InclavareError(f"invalid signal: {text}")
    name = text.upper()
    name = name.removeprefix("SIG")
    if name in SIGNALS:
        return SIGNALS[name]
    for base, sign, limit in (("RTMIN", 1, SIGRTMIN), ("RTMAX", -1, SIGRTMAX)):
        if name == base:
            return limit
        if name.startswith(base) and name[len(base) : len(base) + 1] in "+-":
            offset = name[len(base) + 1 :]
            if offset.isdigit():
                number = limit + int(offset) * (1 if name[len(base)] == "+" else -1)
                if SIGRTMIN <= number <= SIGRTMAX and (number - limit) * sign >= 0:
                    return number
    raise InclavareError(f"unknown signal {text!r}")
