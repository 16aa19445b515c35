from __future__ import annotations

import pytest

from inclavare.errors import InclavareError
from inclavare.linux.signals import parse_signal


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("KILL", 9),
        ("SIGKILL", 9),
        ("sigterm", 15),
        ("term", 15),
        ("9", 9),
        ("HUP", 1),
        ("SIGUSR1", 10),
        ("RTMIN", 34),
        ("RTMIN+3", 37),
        ("SIGRTMAX-1", 63),
        ("64", 64),
    ],
)
def test_signal_names_and_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["", "0", "65", "SIGFOO", "RTMIN+40", "RTMAX+1", "-9", "K ILL"])
def test_unknown_signals_are_errors(text: str) -> None:
    with pytest.raises(InclavareError):
        parse_signal(text)
