"""Thin command-line entry points, one module (or package) per program."""

from __future__ import annotations

import os
import sys


def exit_now(code: int) -> None:
    """Flush the standard streams and end the process without the interpreter's shutdown.

    Tearing down the interpreter (module finalisation, garbage collection) costs several
    milliseconds that a runtime executed many times per container does not need to spend;
    rune leaves no state that only a clean shutdown would save.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if code == 0:
                code = 1
    os._exit(code)
