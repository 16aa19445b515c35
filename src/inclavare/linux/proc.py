"""Facts about processes read from /proc."""

from __future__ import annotations

import os


def read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of `pid`, or None if it is gone.

    The start time tells a process from a later one that reuses its pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            raw = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def is_alive(pid: int, start_time: int) -> bool:
    """True while the process `pid` that started at `start_time` runs (not a zombie)."""
    stat = read_stat(pid)
    return stat is not None and stat[1] == start_time and stat[0] not in ("Z", "X")


def set_oom_score_adj(pid: int | str, value: int) -> None:
    # lowering it needs CAP_SYS_RESOURCE, which root lacks on some machines: say what failed
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as adj_file:
            adj_file.write(str(value))
    except OSError as error:
        raise OSError(error.errno, f"oom_score_adj {value}: {error.strerror}") from None


def close_fds_from(first: int) -> None:
    """Mark every open descriptor >= first close-on-exec (the container must not inherit them)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the descriptor of the listing itself, already closed
