"""`rune update`'s command line turned into a resources object, as runc reads it.

With `--resources FILE` (or `-` for the standard input) the file is the resources object and
every other flag is ignored. Otherwise each flag given sets one field: memory sizes accept
a unit suffix (k, m, g, t, p: powers of 1024, optionally followed by "i" and/or "b", any
case, fractions allowed: "1.5g") or -1 for unlimited; CPU values are plain integers; a flag
left empty (or an integer flag left at 0) changes nothing.
"""

from __future__ import annotations

from inclavare.cgroups.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def parse_size(text: str) -> int:
    """A byte count such as "64m", "1.5GiB", "512 kb" or "1048576"; ValueError otherwise."""
    value = text.strip().lower()
    for suffix in ("b", "i"):
        value = value.removesuffix(suffix)
    unit = ""
    if value and value[-1] in _UNITS:
        unit, value = value[-1], value[:-1]
    value = value.rstrip(" ")
    whole, dot, fraction = value.partition(".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        raise ValueError(text)
    shift = _UNITS[unit]
    size = int(whole) << shift
    if dot:
        size += (int(fraction) << shift) // 10 ** len(fraction)
    if size > (1 << 63) - 1:
        raise ValueError(text)
    return size


def _text(flags: Mapping[str, object], name: str) -> str:
    value = flags.get(name)
    if value is None or value is False:
        return ""
    return str(value).strip()


def _integer(name: str, text: str, unsigned: bool) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise CgroupError(f"invalid value for --{name}: {text!r} is not an integer") from None
    if unsigned and value < 0:
        raise CgroupError(f"invalid value for --{name}: {text!r} is negative")
    return value


def _read_resources(source: str, read_input: Callable[[str], bytes] | None) -> dict[str, Any]:
    from inclavare import lightjson

    try:
        if read_input is not None:
            data = read_input(source)
        elif source == "-":
            import sys

            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as resources_file:
                data = resources_file.read()
    except OSError as error:
        raise CgroupError(f"--resources {source}: {error.strerror}") from None
    where = "standard input" if source == "-" else source
    try:
        document = lightjson.loads(data)
    except ValueError as error:
        raise CgroupError(f"--resources {where}: not JSON: {error}") from None
    if not isinstance(document, dict):
        raise CgroupError(f"--resources {where}: must be a JSON object")
    return document


def parse_update_flags(
    flags: Mapping[str, object], read_input: Callable[[str], bytes] | None = None
) -> dict[str, Any]:
    """The resources object for `rune update`; `read_input(source)` reads `--resources`
    ("-" is the standard input) in place of the file system, for tests."""
    source = _text(flags, "resources")
    if source:
        return _read_resources(source, read_input)
    for name in ("l3-cache-schema", "mem-bw-schema"):
        if _text(flags, name):
            raise CgroupError(f"--{name}: Intel RDT is not supported by rune")

    resources: dict[str, Any] = {}

    def put(section: str, key: str, value: object) -> None:
        resources.setdefault(section, {})[key] = value

    weight = _text(flags, "blkio-weight")
    if weight and weight != "0":
        put("blockIO", "weight", _integer("blkio-weight", weight, True))
    for name, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        text = _text(flags, name)
        if text:
            put("cpu", key, text)
    for name, key, unsigned in (
        ("cpu-idle", "idle", False),
        ("cpu-burst", "burst", True),
        ("cpu-period", "period", True),
        ("cpu-rt-period", "realtimePeriod", True),
        ("cpu-share", "shares", True),
        ("cpu-shares", "shares", True),
        ("cpu-quota", "quota", False),
        ("cpu-rt-runtime", "realtimeRuntime", False),
    ):
        text = _text(flags, name)
        if text:
            put("cpu", key, _integer(name, text, unsigned))
    for name, key in (
        ("memory", "limit"),
        ("memory-swap", "swap"),
        ("memory-reservation", "reservation"),
        ("kernel-memory", "kernel"),
        ("kernel-memory-tcp", "kernelTCP"),
    ):
        text = _text(flags, name)
        if not text:
            continue
        if text == "-1":
            put("memory", key, -1)
            continue
        try:
            put("memory", key, parse_size(text))
        except ValueError:
            raise CgroupError(
                f'invalid value for --{name}: {text!r} is not a size such as "64m" or "1g"'
            ) from None
    memory = resources.get("memory", {})
    if memory.get("limit") == -1 and "swap" not in memory:
        memory["swap"] = -1  # unlimited memory, and swap with it
    pids = _text(flags, "pids-limit")
    if pids and pids != "0":
        put("pids", "limit", _integer("pids-limit", pids, False))
    return resources
