"""`rune events --stats` data (runc's JSON) as containerd's cgroup v1 Metrics message."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _entry(target: Any, values: dict[str, Any]) -> None:
    for name in ("limit", "usage", "max", "failcnt"):
        setattr(target, name, int(values.get(name, 0) or 0))


def metrics_v1(data: dict[str, Any]) -> bytes:
    from inclavare.shim.proto import cgroups_metrics_pb2 as pb

    metrics = pb.Metrics()
    pids = data.get("pids") or {}
    metrics.pids.current = int(pids.get("current", 0))
    metrics.pids.limit = int(pids.get("limit", 0))
    cpu = data.get("cpu") or {}
    usage = cpu.get("usage") or {}
    metrics.cpu.usage.total = int(usage.get("total", 0))
    metrics.cpu.usage.kernel = int(usage.get("kernel", 0))
    metrics.cpu.usage.user = int(usage.get("user", 0))
    metrics.cpu.usage.per_cpu.extend(int(n) for n in usage.get("percpu") or [])
    throttling = cpu.get("throttling") or {}
    metrics.cpu.throttling.periods = int(throttling.get("periods", 0))
    metrics.cpu.throttling.throttled_periods = int(throttling.get("throttledPeriods", 0))
    metrics.cpu.throttling.throttled_time = int(throttling.get("throttledTime", 0))
    memory = data.get("memory") or {}
    if memory:
        stat = metrics.memory
        raw = memory.get("raw") or {}
        stat.cache = int(memory.get("cache", raw.get("cache", 0)))
        for field in stat.DESCRIPTOR.fields:
            if field.name in raw and field.type == field.TYPE_UINT64:
                setattr(stat, field.name, int(raw[field.name]))
        # memory.stat spells some names differently from the message's fields
        for name, key in (
            ("pg_pg_in", "pgpgin"),
            ("pg_pg_out", "pgpgout"),
            ("pg_fault", "pgfault"),
            ("pg_maj_fault", "pgmajfault"),
            ("total_pg_pg_in", "total_pgpgin"),
            ("total_pg_pg_out", "total_pgpgout"),
            ("total_pg_fault", "total_pgfault"),
            ("total_pg_maj_fault", "total_pgmajfault"),
        ):
            if key in raw:
                setattr(stat, name, int(raw[key]))
        for name, key in (
            ("usage", "usage"),
            ("swap", "swap"),
            ("kernel", "kernel"),
            ("kernel_tcp", "kernelTCP"),
        ):
            if key in memory:
                _entry(getattr(stat, name), memory[key])
    blkio = data.get("blkio") or {}
    for name, key in (
        ("io_service_bytes_recursive", "ioServiceBytesRecursive"),
        ("io_serviced_recursive", "ioServicedRecursive"),
        ("io_queued_recursive", "ioQueueRecursive"),
        ("io_service_time_recursive", "ioServiceTimeRecursive"),
        ("io_wait_time_recursive", "ioWaitTimeRecursive"),
        ("io_merged_recursive", "ioMergedRecursive"),
        ("io_time_recursive", "ioTimeRecursive"),
        ("sectors_recursive", "sectorsRecursive"),
    ):
        for item in blkio.get(key) or []:
            getattr(metrics.blkio, name).add(
                op=str(item.get("op", "")),
                major=int(item.get("major", 0)),
                minor=int(item.get("minor", 0)),
                value=int(item.get("value", 0)),
            )
    for size, values in (data.get("hugetlb") or {}).items():
        metrics.hugetlb.add(
            pagesize=str(size),
            usage=int(values.get("usage", 0)),
            max=int(values.get("max", 0)),
            failcnt=int(values.get("failcnt", 0)),
        )
    return bytes(metrics.SerializeToString())
