"""Statistics of a container's cgroup, in the structure `runc events --stats` prints under
"data": cpu, cpuset, memory, pids, blkio, hugetlb, intel_rdt and network_interfaces.

The functions here are pure: each takes `read`, a function from a control file's name to its
text (None when the file does not exist), so that they can be tested on sample contents. The
drivers give them a `read` over the container's directories. Field names, and which fields
are left out when zero, follow runc's JSON so that tools reading one read the other.
"""

from __future__ import annotations

from inclavare.cgroups.resources import parse_cpu_list

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Reader = Callable[[str], "str | None"]

UINT64_MAX = (1 << 64) - 1
USER_HZ = 100  # the unit of cpuacct.stat, on every architecture Linux runs containers on
NANOSECONDS_PER_TICK = 1_000_000_000 // USER_HZ


def _int(text: str | None) -> int:
    """A number from a control file; "max" (cgroup v2's unlimited) reads as 2**64 - 1."""
    if text is None:
        return 0
    value = text.strip()
    if value == "max":
        return UINT64_MAX
    try:
        return int(value)
    except ValueError:
        return 0


def _numbers(text: str | None) -> list[int]:
    if not text:
        return []
    result: list[int] = []
    for word in text.split():
        try:
            result.append(int(word))
        except ValueError:
            return []
    return result


def parse_flat_keyed(text: str | None) -> dict[str, int]:
    """ "key value" lines (memory.stat, cpu.stat, cgroup.events) as a dict of numbers."""
    table: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            table[key] = int(value)
        except ValueError:
            continue
    return table


def parse_nested_keyed(text: str | None) -> list[tuple[str, dict[str, int]]]:
    """ "MAJ:MIN key=value key=value" lines (io.stat) as (device, {key: number})."""
    rows: list[tuple[str, dict[str, int]]] = []
    for line in (text or "").splitlines():
        words = line.split()
        if not words:
            continue
        fields: dict[str, int] = {}
        for word in words[1:]:
            key, _, value = word.partition("=")
            try:
                fields[key] = UINT64_MAX if value == "max" else int(value)
            except ValueError:
                continue
        rows.append((words[0], fields))
    return rows


def _omit_zero(table: dict[str, Any], *keys: str) -> dict[str, Any]:
    """runc's `omitempty`: drop the named keys whose value is zero or empty."""
    for key in keys:
        if not table.get(key):
            table.pop(key, None)
    return table


def _memory_entry(limit: int, usage: int, maximum: int, failcnt: int) -> dict[str, Any]:
    return _omit_zero(
        {"limit": limit, "usage": usage, "max": maximum, "failcnt": failcnt}, "usage", "max"
    )


def _device(text: str) -> tuple[int, int] | None:
    major, colon, minor = text.partition(":")
    if not colon or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def _entry(major: int, minor: int, op: str, value: int) -> dict[str, Any]:
    return _omit_zero(
        {"major": major, "minor": minor, "op": op, "value": value}, "major", "minor", "op", "value"
    )


def parse_blkio_v1(text: str | None) -> list[dict[str, Any]]:
    """blkio.*_recursive files: "MAJ:MIN Op value" lines, and a "Total value" line skipped."""
    entries: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) == 3:
            device = _device(words[0])
            if device is not None:
                entries.append(_entry(device[0], device[1], words[1], _int(words[2])))
        elif len(words) == 2 and words[0] != "Total":
            # blkio.time_recursive and blkio.sectors_recursive have no operation.
            device = _device(words[0])
            if device is not None:
                entries.append(_entry(device[0], device[1], "", _int(words[1])))
    return entries


def _cpuset(read: Reader) -> dict[str, Any]:
    def flag(name: str) -> int:
        return _int(read(name))

    def numbers(name: str) -> list[int]:
        try:
            return parse_cpu_list((read(name) or "").strip())
        except ValueError:
            return []

    relax = (read("cpuset.sched_relax_domain_level") or "").strip()
    table: dict[str, Any] = {
        "cpus": numbers("cpuset.cpus") or numbers("cpuset.cpus.effective"),
        "cpu_exclusive": flag("cpuset.cpu_exclusive"),
        "mems": numbers("cpuset.mems") or numbers("cpuset.mems.effective"),
        "mem_hardwall": flag("cpuset.mem_hardwall"),
        "mem_exclusive": flag("cpuset.mem_exclusive"),
        "memory_migrate": flag("cpuset.memory_migrate"),
        "memory_spread_page": flag("cpuset.memory_spread_page"),
        "memory_spread_slab": flag("cpuset.memory_spread_slab"),
        "memory_pressure": flag("cpuset.memory_pressure"),
        "sched_load_balance": flag("cpuset.sched_load_balance"),
        "sched_relax_domain_level": int(relax) if relax.lstrip("-").isdigit() else 0,
    }
    return _omit_zero(table, "cpus", "mems")


def _empty_stats() -> dict[str, Any]:
    return {
        "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
        "cpuset": {},
        "memory": {},
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def stats_v1(read: Reader, hugepage_sizes: list[str]) -> dict[str, Any]:
    """Statistics from cgroup v1 control files (each controller's files in its own
    hierarchy; `read` finds them by name)."""
    stats = _empty_stats()
    percpu = _numbers(read("cpuacct.usage_percpu"))
    usage: dict[str, Any] = {
        "total": _int(read("cpuacct.usage")),
        "percpu": percpu,
        "percpu_kernel": _numbers(read("cpuacct.usage_percpu_sys")),
        "percpu_user": _numbers(read("cpuacct.usage_percpu_user")),
    }
    ticks = parse_flat_keyed(read("cpuacct.stat"))
    usage["kernel"] = ticks.get("system", 0) * NANOSECONDS_PER_TICK
    usage["user"] = ticks.get("user", 0) * NANOSECONDS_PER_TICK
    stats["cpu"]["usage"] = _omit_zero(usage, "total", "percpu", "percpu_kernel", "percpu_user")
    throttle = parse_flat_keyed(read("cpu.stat"))
    stats["cpu"]["throttling"] = _omit_zero(
        {
            "periods": throttle.get("nr_periods", 0),
            "throttledPeriods": throttle.get("nr_throttled", 0),
            "throttledTime": throttle.get("throttled_time", 0),
        },
        "periods",
        "throttledPeriods",
        "throttledTime",
    )
    if read("cpuset.cpus") is not None:
        stats["cpuset"] = _cpuset(read)

    if read("memory.usage_in_bytes") is not None:
        raw = parse_flat_keyed(read("memory.stat"))
        memory: dict[str, Any] = {"cache": raw.get("cache", 0)}
        for key, prefix in (
            ("usage", "memory"),
            ("swap", "memory.memsw"),
            ("kernel", "memory.kmem"),
            ("kernelTCP", "memory.kmem.tcp"),
        ):
            if prefix != "memory" and read(f"{prefix}.limit_in_bytes") is None:
                continue
            memory[key] = _memory_entry(
                _int(read(f"{prefix}.limit_in_bytes")),
                _int(read(f"{prefix}.usage_in_bytes")),
                _int(read(f"{prefix}.max_usage_in_bytes")),
                _int(read(f"{prefix}.failcnt")),
            )
        memory["raw"] = raw
        stats["memory"] = _omit_zero(memory, "cache", "raw")

    if read("pids.current") is not None:
        stats["pids"] = _omit_zero(
            {"current": _int(read("pids.current")), "limit": _pids_limit(read("pids.max"))},
            "current",
            "limit",
        )

    blkio: dict[str, Any] = {}
    # CFQ's statistics where the kernel has them, else BFQ's, else the throttling layer's.
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        if read(f"{prefix}io_service_bytes_recursive") is None:
            continue
        for key, name in (
            ("ioServiceBytesRecursive", "io_service_bytes_recursive"),
            ("ioServicedRecursive", "io_serviced_recursive"),
            ("ioQueueRecursive", "io_queued_recursive"),
            ("ioServiceTimeRecursive", "io_service_time_recursive"),
            ("ioWaitTimeRecursive", "io_wait_time_recursive"),
            ("ioMergedRecursive", "io_merged_recursive"),
            ("ioTimeRecursive", "time_recursive"),
            ("sectorsRecursive", "sectors_recursive"),
        ):
            entries = parse_blkio_v1(read(prefix + name))
            if entries:
                blkio[key] = entries
        break
    stats["blkio"] = blkio

    hugetlb: dict[str, Any] = {}
    for size in hugepage_sizes:
        if read(f"hugetlb.{size}.usage_in_bytes") is None:
            continue
        hugetlb[size] = _omit_zero(
            {
                "usage": _int(read(f"hugetlb.{size}.usage_in_bytes")),
                "max": _int(read(f"hugetlb.{size}.max_usage_in_bytes")),
                "failcnt": _int(read(f"hugetlb.{size}.failcnt")),
            },
            "usage",
            "max",
        )
    stats["hugetlb"] = hugetlb
    return stats


def _pids_limit(text: str | None) -> int:
    """pids.max: "max" is no limit, which runc reports as 0 (left out)."""
    if text is None or text.strip() == "max":
        return 0
    return _int(text)


def stats_v2(read: Reader, hugepage_sizes: list[str]) -> dict[str, Any]:
    """Statistics from a cgroup v2 directory, mapped onto the v1 structure as runc does:
    times in nanoseconds, swap counted with memory, I/O as Read/Write entries."""
    stats = _empty_stats()
    cpu = parse_flat_keyed(read("cpu.stat"))
    stats["cpu"]["usage"] = _omit_zero(
        {
            "total": cpu.get("usage_usec", 0) * 1000,
            "kernel": cpu.get("system_usec", 0) * 1000,
            "user": cpu.get("user_usec", 0) * 1000,
        },
        "total",
    )
    stats["cpu"]["throttling"] = _omit_zero(
        {
            "periods": cpu.get("nr_periods", 0),
            "throttledPeriods": cpu.get("nr_throttled", 0),
            "throttledTime": cpu.get("throttled_usec", 0) * 1000,
        },
        "periods",
        "throttledPeriods",
        "throttledTime",
    )
    if read("cpuset.cpus.effective") is not None:
        stats["cpuset"] = _cpuset(read)

    if read("memory.current") is not None:
        raw = parse_flat_keyed(read("memory.stat"))
        events = parse_flat_keyed(read("memory.events"))
        usage = _int(read("memory.current"))
        limit = _int(read("memory.max"))
        memory: dict[str, Any] = {
            "cache": raw.get("file", 0),
            "usage": _memory_entry(limit, usage, _int(read("memory.peak")), events.get("max", 0)),
        }
        if read("memory.swap.current") is not None:
            swap_limit = _int(read("memory.swap.max"))
            swap_events = parse_flat_keyed(read("memory.swap.events"))
            # As cgroup v1 reports it: memory plus swap.
            if swap_limit != UINT64_MAX and limit != UINT64_MAX:
                swap_limit += limit
            memory["swap"] = _memory_entry(
                swap_limit,
                _int(read("memory.swap.current")) + usage,
                _int(read("memory.swap.peak")),
                swap_events.get("max", 0),
            )
        memory["raw"] = raw
        stats["memory"] = _omit_zero(memory, "cache", "raw")

    if read("pids.current") is not None:
        stats["pids"] = _omit_zero(
            {"current": _int(read("pids.current")), "limit": _pids_limit(read("pids.max"))},
            "current",
            "limit",
        )

    service_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    for device_text, fields in parse_nested_keyed(read("io.stat")):
        device = _device(device_text)
        if device is None:
            continue
        major, minor = device
        for key, op, target in (
            ("rbytes", "Read", service_bytes),
            ("wbytes", "Write", service_bytes),
            ("dbytes", "Discard", service_bytes),
            ("rios", "Read", serviced),
            ("wios", "Write", serviced),
            ("dios", "Discard", serviced),
        ):
            if key in fields:
                target.append(_entry(major, minor, op, fields[key]))
    blkio: dict[str, Any] = {}
    if service_bytes:
        blkio["ioServiceBytesRecursive"] = service_bytes
    if serviced:
        blkio["ioServicedRecursive"] = serviced
    stats["blkio"] = blkio

    hugetlb: dict[str, Any] = {}
    for size in hugepage_sizes:
        if read(f"hugetlb.{size}.current") is None:
            continue
        events = parse_flat_keyed(read(f"hugetlb.{size}.events"))
        hugetlb[size] = _omit_zero(
            {
                "usage": _int(read(f"hugetlb.{size}.current")),
                "failcnt": events.get("max", 0),
            },
            "usage",
        )
    stats["hugetlb"] = hugetlb
    return stats
