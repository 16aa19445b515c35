"""Statistics from sample control files, in the structure of `runc events --stats`."""

from __future__ import annotations

from inclavare.cgroups.statistics import (
    UINT64_MAX,
    parse_blkio_v1,
    parse_flat_keyed,
    parse_nested_keyed,
    stats_v1,
    stats_v2,
)

V1_FILES = {
    "cpuacct.usage": "7289942\n",
    "cpuacct.usage_percpu": "7289942 0 \n",
    "cpuacct.usage_percpu_sys": "4000000 0 \n",
    "cpuacct.usage_percpu_user": "3289942 0 \n",
    "cpuacct.stat": "user 12\nsystem 3\n",
    "cpu.stat": "nr_periods 5\nnr_throttled 2\nthrottled_time 1500000\n",
    "cpuset.cpus": "0-1\n",
    "cpuset.mems": "0\n",
    "cpuset.cpu_exclusive": "0\n",
    "cpuset.sched_load_balance": "1\n",
    "cpuset.sched_relax_domain_level": "-1\n",
    "memory.usage_in_bytes": "831488\n",
    "memory.max_usage_in_bytes": "2265088\n",
    "memory.limit_in_bytes": "104857600\n",
    "memory.failcnt": "3\n",
    "memory.memsw.usage_in_bytes": "831488\n",
    "memory.memsw.max_usage_in_bytes": "2265088\n",
    "memory.memsw.limit_in_bytes": "9223372036854771712\n",
    "memory.memsw.failcnt": "0\n",
    "memory.kmem.limit_in_bytes": "9223372036854771712\n",
    "memory.kmem.usage_in_bytes": "540672\n",
    "memory.kmem.max_usage_in_bytes": "602112\n",
    "memory.kmem.failcnt": "0\n",
    "memory.stat": "cache 4096\nrss 49152\ntotal_rss 49152\n",
    "pids.current": "2\n",
    "pids.max": "50\n",
    "blkio.bfq.io_service_bytes_recursive": (
        "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 12288\n254:0 Async 0\n"
        "254:0 Discard 0\n254:0 Total 12288\nTotal 12288\n"
    ),
    "blkio.bfq.io_serviced_recursive": "254:0 Read 1\n254:0 Write 2\nTotal 3\n",
    "blkio.throttle.io_service_bytes_recursive": "254:0 Read 999\n",
    "hugetlb.2MB.usage_in_bytes": "0\n",
    "hugetlb.2MB.max_usage_in_bytes": "2097152\n",
    "hugetlb.2MB.failcnt": "1\n",
}


def test_v1_statistics() -> None:
    stats = stats_v1(V1_FILES.get, ["2MB", "1GB"])
    assert set(stats) == {
        "cpu",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "hugetlb",
        "intel_rdt",
        "network_interfaces",
    }
    assert stats["cpu"] == {
        "usage": {
            "total": 7289942,
            "percpu": [7289942, 0],
            "percpu_kernel": [4000000, 0],
            "percpu_user": [3289942, 0],
            "kernel": 30000000,
            "user": 120000000,
        },
        "throttling": {"periods": 5, "throttledPeriods": 2, "throttledTime": 1500000},
    }
    assert stats["cpuset"]["cpus"] == [0, 1]
    assert stats["cpuset"]["mems"] == [0]
    assert stats["cpuset"]["sched_load_balance"] == 1
    assert stats["cpuset"]["sched_relax_domain_level"] == -1
    memory = stats["memory"]
    assert memory["cache"] == 4096
    assert memory["usage"] == {"limit": 104857600, "usage": 831488, "max": 2265088, "failcnt": 3}
    assert memory["swap"]["limit"] == 9223372036854771712
    assert memory["kernel"] == {
        "limit": 9223372036854771712,
        "usage": 540672,
        "max": 602112,
        "failcnt": 0,
    }
    assert "kernelTCP" not in memory  # the sample has no memory.kmem.tcp files
    assert memory["raw"] == {"cache": 4096, "rss": 49152, "total_rss": 49152}
    assert stats["pids"] == {"current": 2, "limit": 50}
    # BFQ's files win over the throttling layer's; the summary line is skipped.
    assert stats["blkio"]["ioServiceBytesRecursive"][:2] == [
        {"major": 254, "op": "Read", "value": 4096},
        {"major": 254, "op": "Write", "value": 8192},
    ]
    assert len(stats["blkio"]["ioServiceBytesRecursive"]) == 6
    assert stats["blkio"]["ioServicedRecursive"][1] == {"major": 254, "op": "Write", "value": 2}
    assert stats["hugetlb"] == {"2MB": {"max": 2097152, "failcnt": 1}}
    assert stats["intel_rdt"] == {}
    assert stats["network_interfaces"] is None


def test_v1_statistics_without_controllers() -> None:
    stats = stats_v1(lambda name: None, [])
    assert stats["memory"] == {}
    assert stats["pids"] == {}
    assert stats["cpuset"] == {}
    assert stats["blkio"] == {}
    assert stats["cpu"] == {"usage": {"kernel": 0, "user": 0}, "throttling": {}}


def test_unlimited_pids_are_left_out() -> None:
    files = {"pids.current": "1\n", "pids.max": "max\n"}
    assert stats_v1(files.get, [])["pids"] == {"current": 1}


V2_FILES = {
    "cpu.stat": (
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n"
        "nr_periods 10\nnr_throttled 4\nthrottled_usec 300\n"
    ),
    "cpuset.cpus.effective": "0-1\n",
    "cpuset.mems.effective": "0\n",
    "memory.current": "1048576\n",
    "memory.max": "4194304\n",
    "memory.peak": "2097152\n",
    "memory.events": "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n",
    "memory.swap.current": "4096\n",
    "memory.swap.max": "8388608\n",
    "memory.swap.events": "max 2\nfail 0\n",
    "memory.stat": "anon 65536\nfile 8192\n",
    "pids.current": "3\n",
    "pids.max": "max\n",
    "io.stat": "254:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    "hugetlb.2MB.current": "2097152\n",
    "hugetlb.2MB.max": "max\n",
    "hugetlb.2MB.events": "max 5\n",
}


def test_v2_statistics() -> None:
    stats = stats_v2(V2_FILES.get, ["2MB"])
    assert stats["cpu"] == {
        "usage": {"total": 2500000, "kernel": 500000, "user": 2000000},
        "throttling": {"periods": 10, "throttledPeriods": 4, "throttledTime": 300000},
    }
    assert stats["cpuset"]["cpus"] == [0, 1]
    memory = stats["memory"]
    assert memory["cache"] == 8192
    assert memory["usage"] == {"limit": 4194304, "usage": 1048576, "max": 2097152, "failcnt": 7}
    # Swap as cgroup v1 counts it: memory plus swap.
    assert memory["swap"] == {"limit": 4194304 + 8388608, "usage": 1048576 + 4096, "failcnt": 2}
    assert memory["raw"] == {"anon": 65536, "file": 8192}
    assert stats["pids"] == {"current": 3}
    assert stats["blkio"] == {
        "ioServiceBytesRecursive": [
            {"major": 254, "op": "Read", "value": 4096},
            {"major": 254, "op": "Write"},
            {"major": 254, "op": "Discard"},
        ],
        "ioServicedRecursive": [
            {"major": 254, "op": "Read", "value": 1},
            {"major": 254, "op": "Write"},
            {"major": 254, "op": "Discard"},
        ],
    }
    assert stats["hugetlb"] == {"2MB": {"usage": 2097152, "failcnt": 5}}


def test_v2_unlimited_memory() -> None:
    files = {"memory.current": "10\n", "memory.max": "max\n", "memory.swap.current": "0\n"}
    files["memory.swap.max"] = "max\n"
    memory = stats_v2(files.get, [])["memory"]
    assert memory["usage"]["limit"] == UINT64_MAX
    assert memory["swap"]["limit"] == UINT64_MAX


def test_parsers_tolerate_damage() -> None:
    assert parse_flat_keyed("a 1\nb x\n\nc 3 4\nd\n") == {"a": 1}
    assert parse_nested_keyed("8:0 a=1 b=max c=x\n\n") == [("8:0", {"a": 1, "b": UINT64_MAX})]
    assert parse_blkio_v1("8:0 Read 1\nbad line here\n8:x Write 2\n8:1 5\n") == [
        {"major": 8, "op": "Read", "value": 1},
        {"major": 8, "minor": 1, "value": 5},
    ]
