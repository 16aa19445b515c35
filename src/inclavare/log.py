"""A small logger that writes runc's log line formats.

containerd's runc shim passes `--log FILE --log-format json` and, when a command fails, reads
the last `"level":"error"` line of FILE to explain the failure. Text lines follow runc's
`time="..." level=... msg="..."` form. The standard `logging` module is not used: importing it
costs more than everything else `rune` needs to start a container.
"""

from __future__ import annotations

import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_destination: str | None = None  # None: standard error
_json_format = False
_threshold = LEVELS["info"]


def configure(path: str | None = None, log_format: str = "text", debug: bool = False) -> None:
    global _destination, _json_format, _threshold
    _destination = path or None
    _json_format = log_format == "json"
    _threshold = LEVELS["debug"] if debug else LEVELS["info"]


def logs_to_stderr() -> bool:
    return _destination is None or _destination == "/dev/stderr"


def format_line(level: str, message: str, when: float | None = None) -> str:
    from inclavare import lightjson

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    if _json_format:
        return lightjson.dumps({"level": level, "msg": message, "time": stamp})
    return f'time="{stamp}" level={level} msg={lightjson.dumps(message)}'


def log(level: str, message: str) -> None:
    if LEVELS[level] < _threshold:
        return
    line = format_line(level, message) + "\n"
    try:
        if _destination is None:
            sys.stderr.write(line)
            sys.stderr.flush()
        else:
            fd = os.open(_destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
    except OSError:
        pass  # a log that cannot be written must not turn a success into a failure


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warning(message: str) -> None:
    log("warning", message)


def error(message: str) -> None:
    log("error", message)
