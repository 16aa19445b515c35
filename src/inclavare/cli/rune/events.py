"""rune events: a container's statistics and OOM events as runc's JSON lines."""

from __future__ import annotations

import sys
import time

from inclavare.cli.goflags import Flag, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options] <container-id>"
DESCRIPTION = """\
   Every --interval, a {"type": "stats", "id": ..., "data": {...}} line with the cgroup
   statistics, and a {"type": "oom", ...} line when the kernel's OOM killer struck; until
   the container stops. With --stats, one stats line and exit."""
ARGUMENTS = (1, 1)
FLAGS = [
    Flag("interval", str, "the interval between stats events, e.g. 5s, 500ms", "5s"),
    Flag("stats", bool, "display the container's stats once, then exit"),
]


def parse_interval(text: str) -> float:
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        number = text.removesuffix(suffix)
        if number != text:
            try:
                value = float(number) * scale
            except ValueError:
                break
            if value > 0:
                return value
            break
    raise UsageError(f"invalid --interval {text!r}: a duration such as 5s or 500ms")


def _event(kind: str, container_id: str, data: dict[str, Any] | None = None) -> str:
    from inclavare import lightjson

    event: dict[str, Any] = {"type": kind, "id": container_id}
    if data is not None:
        event["data"] = data
    return lightjson.dumps(event) + "\n"


def _oom_data(container: Any) -> dict[str, Any] | None:
    """For an enclave with an EPC budget, what the OOM killer enforced (runc's oom events
    carry no data; this one says why)."""
    budget = container.record.get("enclave", {}).get("epc_limit_mib")
    if budget is None:
        return None
    return {"reason": "enclave EPC budget exceeded", "epcLimitMiB": budget}


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.cgroups import oom_kills, stats
    from inclavare.runtime.container import STOPPED, Container, ContainerError

    interval = parse_interval(options.interval)
    container = Container.load(context.root, args[0])
    if container.status() == STOPPED:
        raise ContainerError("container not running")
    leaves = container.record.get("cgroup_dirs_leaf", [])
    if options.stats:
        sys.stdout.write(_event("stats", container.id, stats(leaves)))
        return 0
    kills = oom_kills(leaves)
    while container.status() != STOPPED:
        now = oom_kills(leaves)
        if now > kills:
            sys.stdout.write(_event("oom", container.id, _oom_data(container)))
            kills = now
        sys.stdout.write(_event("stats", container.id, stats(leaves)))
        sys.stdout.flush()
        time.sleep(interval)
    return 0
