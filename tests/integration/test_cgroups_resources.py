"""Resources on this host's real cgroups (v1 controllers, as on the project's CI machines),
with real processes placed in them: limits enforced by the kernel, freezing, statistics,
updates. Each test makes its own cgroup under a unique name and, at the end, kills its
processes and removes the cgroup, and checks that both are gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from inclavare import cgroups
from inclavare.cgroups import Cgroup, CgroupError
from inclavare.cgroups.devices import Allowlist, container_rules
from inclavare.cgroups.resources import DeviceRule
from inclavare.cgroups.v1 import V1Driver

PYTHON = sys.executable


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    """In place of the directory's requirements: these tests use the cgroups package
    directly, not the installed rune, and need root and a cgroup v1 layout."""
    if os.geteuid() != 0:
        pytest.skip("cgroup resource tests write to /sys/fs/cgroup and need root")
    with open("/proc/self/mountinfo") as mountinfo:
        v1 = [line for line in mountinfo if " - cgroup " in line]
    if not any("memory" in line.split()[-1].split(",") for line in v1):
        pytest.skip("no cgroup v1 memory hierarchy on this host (these tests cover the v1 driver)")


class Sandbox:
    """A cgroup in every hierarchy, and the processes a test starts in it."""

    def __init__(self) -> None:
        self.cgroup = cgroups.open_cgroup("", f"cgtest-{uuid.uuid4().hex[:10]}")
        self.made = self.cgroup.missing_directories()
        self.cgroup.create()
        self.children: list[subprocess.Popen[str]] = []

    @property
    def leaves(self) -> list[str]:
        return self.cgroup.directories

    def directory(self, controller: str) -> str:
        for hierarchy, directory in zip(
            self.cgroup.hierarchies, self.cgroup.directories, strict=True
        ):
            if controller in hierarchy.controllers:
                return directory
        pytest.skip(f"the {controller} controller is not mounted")

    def read(self, controller: str, name: str) -> str:
        with open(os.path.join(self.directory(controller), name)) as control:
            return control.read().strip()

    def apply(self, document: dict[str, Any]) -> None:
        resources = cgroups.validate_resources(document)
        self.cgroup.check_resources(resources)
        cgroups.apply_resources(self.leaves, resources)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start a program that is in the cgroup before it executes."""
        procs = [os.path.join(directory, "cgroup.procs") for directory in self.leaves]

        def join() -> None:
            pid = str(os.getpid()).encode()
            for path in procs:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)

        child = subprocess.Popen(
            args,
            preexec_fn=join,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.children.append(child)
        return child

    def python(self, code: str) -> subprocess.Popen[str]:
        return self.spawn(PYTHON, "-I", "-S", "-c", code)

    def close(self) -> None:
        if cgroups.is_frozen(self.leaves):
            cgroups.thaw(self.leaves)
        deadline = time.monotonic() + 10
        while cgroups.processes_in(self.leaves) and time.monotonic() < deadline:
            cgroups.signal_all(self.leaves, signal.SIGKILL)
            for child in self.children:
                if child.poll() is None:
                    try:
                        child.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
        for child in self.children:
            child.kill()
            child.communicate(timeout=10)
        left = cgroups.processes_in(self.leaves)
        cgroups.remove_directories(self.made, self.made)
        assert not left, f"processes left in the cgroup: {left}"
        remaining = [directory for directory in self.made if os.path.exists(directory)]
        assert not remaining, f"cgroup directories left: {remaining}"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_memory_limit_kills_what_allocates_beyond_it(sandbox: Sandbox) -> None:
    limit = 48 << 20
    sandbox.apply({"memory": {"limit": limit, "swap": limit, "disableOOMKiller": False}})
    assert int(sandbox.read("memory", "memory.limit_in_bytes")) == limit
    small = sandbox.python("b = b'x' * (8 << 20); print(len(b))")
    assert small.communicate(timeout=30)[0].strip() == str(8 << 20)
    big = sandbox.python("b = b'x' * (200 << 20); print('allocated')")
    out, _ = big.communicate(timeout=30)
    assert big.returncode == -signal.SIGKILL, (big.returncode, out)
    assert "allocated" not in out
    assert int(sandbox.read("memory", "memory.max_usage_in_bytes")) == limit
    oom = dict(line.split() for line in sandbox.read("memory", "memory.oom_control").splitlines())
    assert int(oom["oom_kill"]) >= 1
    assert cgroups.oom_kills(sandbox.leaves) == int(oom["oom_kill"])
    stats = cgroups.stats(sandbox.leaves)
    assert stats["memory"]["usage"]["limit"] == limit
    assert stats["memory"]["usage"]["max"] == limit
    assert stats["memory"]["raw"]["hierarchical_memory_limit"] == limit


FORK_UNTIL_REFUSED = """
import os, time
children = []
try:
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    print(len(children), 0)
except OSError as error:
    print(len(children), error.errno)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def test_pids_limit_refuses_fork(sandbox: Sandbox) -> None:
    sandbox.apply({"pids": {"limit": 4}})
    assert sandbox.read("pids", "pids.max") == "4"
    child = sandbox.python(FORK_UNTIL_REFUSED)
    out, err = child.communicate(timeout=30)
    assert out.split() == ["3", "11"], (out, err)  # EAGAIN once four tasks exist


def test_cpu_quota_is_written_and_enforced(sandbox: Sandbox) -> None:
    sandbox.apply({"cpu": {"shares": 256, "quota": 10000, "period": 50000}})
    assert sandbox.read("cpu", "cpu.shares") == "256"
    assert sandbox.read("cpu", "cpu.cfs_quota_us") == "10000"
    assert sandbox.read("cpu", "cpu.cfs_period_us") == "50000"
    busy = sandbox.spawn("sh", "-c", "while :; do :; done")
    time.sleep(0.05)
    start_ticks, start = cpu_ticks(busy.pid), time.monotonic()
    time.sleep(1.0)
    used = (cpu_ticks(busy.pid) - start_ticks) / os.sysconf("SC_CLK_TCK")
    elapsed = time.monotonic() - start
    assert used < 0.35 * elapsed, f"{used:.2f} s of CPU in {elapsed:.2f} s under a 20% quota"
    throttling = cgroups.stats(sandbox.leaves)["cpu"]["throttling"]
    assert throttling["throttledPeriods"] > 0
    assert throttling["periods"] >= throttling["throttledPeriods"]


def first_disk() -> tuple[int, int, str]:
    """A block device of this host: major, minor, and its I/O scheduler in use."""
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{name}/dev") as numbers:
                major, minor = (int(n) for n in numbers.read().split(":"))
            with open(f"/sys/block/{name}/queue/scheduler") as scheduler:
                text = scheduler.read()
        except OSError:
            continue
        if name.startswith(("loop", "zram", "ram")):
            continue
        in_use = text[text.index("[") + 1 : text.index("]")] if "[" in text else text.strip()
        return major, minor, in_use
    pytest.skip("no block device on this host")


def test_every_value_is_written(sandbox: Sandbox) -> None:
    major, minor, _ = first_disk()
    sandbox.apply(
        {
            "memory": {
                "limit": 64 << 20,
                "reservation": 32 << 20,
                "swappiness": 20,
                "disableOOMKiller": True,
                "kernelTCP": 8 << 20,
            },
            "cpu": {
                "shares": 300,
                "period": 50000,
                "quota": 25000,
                "burst": 5000,
                "realtimePeriod": 100000,
                "realtimeRuntime": 5000,
                "idle": 0,
            },
            "blockIO": {
                "weight": 200,
                "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
                "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 500}],
            },
        }
    )
    expected = {
        ("memory", "memory.limit_in_bytes"): str(64 << 20),
        ("memory", "memory.soft_limit_in_bytes"): str(32 << 20),
        ("memory", "memory.swappiness"): "20",
        ("memory", "memory.kmem.tcp.limit_in_bytes"): str(8 << 20),
        ("cpu", "cpu.shares"): "300",
        ("cpu", "cpu.cfs_period_us"): "50000",
        ("cpu", "cpu.cfs_quota_us"): "25000",
        ("cpu", "cpu.rt_period_us"): "100000",
        ("cpu", "cpu.rt_runtime_us"): "5000",
        ("blkio", "blkio.throttle.read_bps_device"): f"{major}:{minor} {1 << 20}",
        ("blkio", "blkio.throttle.write_iops_device"): f"{major}:{minor} 500",
    }
    for (controller, name), value in expected.items():
        assert sandbox.read(controller, name) == value, name
    assert "oom_kill_disable 1" in sandbox.read("memory", "memory.oom_control")
    if os.path.exists(os.path.join(sandbox.directory("cpu"), "cpu.cfs_burst_us")):
        assert sandbox.read("cpu", "cpu.cfs_burst_us") == "5000"
    weight_file = "blkio.weight"
    if not os.path.exists(os.path.join(sandbox.directory("blkio"), weight_file)):
        weight_file = "blkio.bfq.weight"
    assert sandbox.read("blkio", weight_file).split()[-1] == "200"


def test_a_device_weight_without_bfq_is_a_clear_error(sandbox: Sandbox) -> None:
    major, minor, scheduler = first_disk()
    if scheduler in ("bfq", "cfq"):
        pytest.skip(f"the disk uses {scheduler}, which takes per-device weights")
    resources = cgroups.validate_resources(
        {"blockIO": {"weightDevice": [{"major": major, "minor": minor, "weight": 300}]}}
    )
    with pytest.raises(CgroupError, match=r"need the BFQ or CFQ I/O scheduler on device"):
        cgroups.apply_resources(sandbox.leaves, resources)


def test_cpuset_confines_the_process(sandbox: Sandbox) -> None:
    sandbox.apply({"cpu": {"cpus": "0", "mems": "0"}})
    assert sandbox.read("cpuset", "cpuset.cpus") == "0"
    sleeper = sandbox.spawn("sleep", "30")
    with open(f"/proc/{sleeper.pid}/status") as status:
        allowed = [line for line in status if line.startswith("Cpus_allowed_list:")]
    assert allowed == ["Cpus_allowed_list:\t0\n"]
    assert cgroups.stats(sandbox.leaves)["cpuset"]["cpus"] == [0]


def test_a_cpu_the_host_lacks_is_a_clear_error(sandbox: Sandbox) -> None:
    missing = os.cpu_count() or 1
    resources = cgroups.validate_resources({"cpu": {"cpus": str(missing + 7)}})
    message = r'^cpu\.cpus: "\d+" is not within the CPUs this cgroup may use \(0'
    with pytest.raises(CgroupError, match=message):
        cgroups.apply_resources(sandbox.leaves, resources)


OPEN_DEVICES = """
import os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
        print(path, "ok")
    except OSError as error:
        print(path, error.errno)
"""


def test_device_rules(sandbox: Sandbox) -> None:
    # /dev/kmsg (c 1:11) and /dev/loop0 (b 7:0) are in no default rule; the spec allows
    # /dev/tty1 (c 4:1) for mknod only, so opening any of them is refused.
    rule = {"allow": True, "type": "c", "major": 4, "minor": 1, "access": "m"}
    sandbox.apply({"devices": [rule]})
    listed = sandbox.read("devices", "devices.list").splitlines()
    expected = Allowlist.of(container_rules([DeviceRule(True, "c", 4, 1, "m")])).lines()
    assert sorted(listed) == sorted(expected)
    probe = sandbox.spawn(
        PYTHON,
        "-I",
        "-S",
        "-c",
        OPEN_DEVICES,
        "/dev/null",
        "/dev/zero",
        "/dev/kmsg",
        "/dev/tty1",
        "/dev/loop0",
    )
    out, err = probe.communicate(timeout=30)
    assert out.split("\n")[:-1] == [
        "/dev/null ok",
        "/dev/zero ok",
        "/dev/kmsg 1",  # EPERM
        "/dev/tty1 1",
        "/dev/loop0 1",
    ], err


def test_spec_rules_allow_more_devices(sandbox: Sandbox) -> None:
    sandbox.apply(
        {"devices": [{"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]}
    )
    probe = sandbox.spawn(PYTHON, "-I", "-S", "-c", OPEN_DEVICES, "/dev/kmsg")
    out, err = probe.communicate(timeout=30)
    assert out.strip() == "/dev/kmsg ok", err


def test_device_program_on_the_hybrid_hosts_cgroup2_hierarchy(sandbox: Sandbox) -> None:
    """The eBPF program of the v2 driver, attached to the container's directory in the
    cgroup2 hierarchy that hybrid hosts mount: the kernel runs it on every device access."""
    unified = [
        directory
        for hierarchy, directory in zip(sandbox.cgroup.hierarchies, sandbox.leaves, strict=True)
        if hierarchy.version == 2
    ]
    if not unified:
        pytest.skip("no cgroup2 hierarchy mounted")
    from inclavare.cgroups.ebpf import attach_device_program

    rules = container_rules([DeviceRule(True, "c", 1, 11, "r")])
    attach_device_program(unified[0], Allowlist.of(rules))
    probe = sandbox.spawn(
        PYTHON, "-I", "-S", "-c", OPEN_DEVICES, "/dev/null", "/dev/kmsg", "/dev/tty1"
    )
    out, err = probe.communicate(timeout=30)
    assert out.split("\n")[:-1] == ["/dev/null ok", "/dev/kmsg ok", "/dev/tty1 1"], err


def test_freeze_stops_and_thaw_resumes(sandbox: Sandbox) -> None:
    busy = sandbox.spawn("sh", "-c", "while :; do :; done")
    wait_for(lambda: cpu_ticks(busy.pid) > 0)
    assert not cgroups.is_frozen(sandbox.leaves)
    cgroups.freeze(sandbox.leaves)
    assert cgroups.is_frozen(sandbox.leaves)
    assert sandbox.read("freezer", "freezer.state") == "FROZEN"
    ticks = cpu_ticks(busy.pid)
    time.sleep(0.3)
    assert cpu_ticks(busy.pid) == ticks
    assert process_state(busy.pid) != "R"
    cgroups.thaw(sandbox.leaves)
    assert not cgroups.is_frozen(sandbox.leaves)
    wait_for(lambda: cpu_ticks(busy.pid) > ticks + 5)
    assert process_state(busy.pid) == "R"


def test_hybrid_hosts_freeze_through_cgroup2_without_a_v1_freezer(sandbox: Sandbox) -> None:
    driver = sandbox.cgroup.driver()
    assert isinstance(driver, V1Driver)
    unified = [d for d in driver.other_directories if os.path.exists(f"{d}/cgroup.freeze")]
    if not unified:
        pytest.skip("no cgroup2 hierarchy mounted beside the v1 controllers")
    without_freezer = V1Driver(
        {name: d for name, d in driver.directories.items() if name != "freezer"},
        driver.other_directories,
    )
    busy = sandbox.spawn("sh", "-c", "while :; do :; done")
    wait_for(lambda: cpu_ticks(busy.pid) > 0)
    without_freezer.freeze()
    try:
        assert without_freezer.is_frozen()
        assert sandbox.read("freezer", "freezer.state") == "THAWED"
        ticks = cpu_ticks(busy.pid)
        time.sleep(0.3)
        assert cpu_ticks(busy.pid) == ticks
    finally:
        without_freezer.thaw()
    assert not without_freezer.is_frozen()
    wait_for(lambda: cpu_ticks(busy.pid) > ticks + 5)


def test_stats_reflect_usage(sandbox: Sandbox) -> None:
    sandbox.apply({"memory": {"limit": 256 << 20}, "pids": {"limit": 50}})
    worker = sandbox.python(
        "import time\nb = b'x' * (32 << 20)\nend = time.time() + 0.3\n"
        "while time.time() < end: pass\nprint('ready', flush=True)\ntime.sleep(30)"
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready"
    sandbox.spawn("sleep", "30")
    stats = cgroups.stats(sandbox.leaves)
    json.dumps(stats)  # serialisable as is
    assert stats["cpu"]["usage"]["total"] > 100_000_000  # at least 0.1 s of CPU time
    assert sum(stats["cpu"]["usage"]["percpu"]) == pytest.approx(
        stats["cpu"]["usage"]["total"], rel=0.05
    )
    assert stats["memory"]["usage"]["usage"] >= 32 << 20
    assert stats["memory"]["usage"]["max"] >= stats["memory"]["usage"]["usage"]
    assert stats["memory"]["usage"]["limit"] == 256 << 20
    assert stats["memory"]["raw"]["total_rss"] > 0
    assert stats["pids"] == {"current": 2, "limit": 50}
    assert stats["network_interfaces"] is None


def test_update_changes_a_running_cgroup(sandbox: Sandbox) -> None:
    current = {"memory": {"limit": 64 << 20, "swap": 64 << 20}, "pids": {"limit": 10}}
    sandbox.apply(current)
    sleeper = sandbox.spawn("sleep", "30")
    update = cgroups.parse_update_flags(
        {"memory": "128m", "memory-swap": "256m", "cpu-quota": "20000"}
    )
    merged = cgroups.update_resources(sandbox.leaves, current, update)
    assert merged == {
        "memory": {"limit": 128 << 20, "swap": 256 << 20},
        "pids": {"limit": 10},
        "cpu": {"quota": 20000},
    }
    assert int(sandbox.read("memory", "memory.limit_in_bytes")) == 128 << 20
    assert int(sandbox.read("memory", "memory.memsw.limit_in_bytes")) == 256 << 20
    assert sandbox.read("cpu", "cpu.cfs_quota_us") == "20000"
    # Lowering below the memory+swap limit in force: the order of the writes matters.
    merged = cgroups.update_resources(
        sandbox.leaves, merged, {"memory": {"limit": 16 << 20, "swap": 32 << 20}}
    )
    assert int(sandbox.read("memory", "memory.limit_in_bytes")) == 16 << 20
    assert int(sandbox.read("memory", "memory.memsw.limit_in_bytes")) == 32 << 20
    assert sleeper.poll() is None
    with pytest.raises(CgroupError, match=r"memory\.swap: below memory\.limit"):
        cgroups.update_resources(sandbox.leaves, merged, {"memory": {"limit": 64 << 20}})
    assert int(sandbox.read("memory", "memory.limit_in_bytes")) == 16 << 20


def test_update_refuses_a_limit_below_usage_when_asked(sandbox: Sandbox) -> None:
    sandbox.apply({"memory": {"limit": 256 << 20}})
    worker = sandbox.python(
        "b = b'x' * (32 << 20)\nprint('ready', flush=True)\nimport time\ntime.sleep(30)"
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    with pytest.raises(CgroupError, match="below the container's current usage"):
        cgroups.update_resources(
            sandbox.leaves, {}, {"memory": {"limit": 8 << 20, "checkBeforeUpdate": True}}
        )
    assert int(sandbox.read("memory", "memory.limit_in_bytes")) == 256 << 20


def test_what_this_host_cannot_apply_is_refused_before_anything_is_made() -> None:
    cgroup = cgroups.open_cgroup("", f"cgtest-{uuid.uuid4().hex[:10]}")
    controllers = {c for h in cgroup.hierarchies for c in h.controllers}
    with pytest.raises(
        CgroupError, match=r"^config\.json: linux\.resources\.unified: needs cgroup v2"
    ):
        cgroup.check_resources(cgroups.validate_resources({"unified": {"memory.high": "1"}}))
    for controller, document in (
        ("hugetlb", {"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]}),
        ("net_cls", {"network": {"classID": 1}}),
        ("rdma", {"rdma": {"mlx5_0": {"hcaHandles": 1}}}),
    ):
        if controller in controllers:
            continue
        with pytest.raises(CgroupError, match=f"the {controller} controller is not mounted"):
            cgroup.check_resources(cgroups.validate_resources(document))
    assert not any(os.path.exists(directory) for directory in cgroup.directories)


def test_from_directories_finds_the_hierarchies(sandbox: Sandbox) -> None:
    found = Cgroup.from_directories(sandbox.leaves)
    assert found.directories == sandbox.leaves
    assert found.version == 1
    assert found.driver().version == 1
    with pytest.raises(CgroupError, match="no mounted cgroup hierarchy holds"):
        Cgroup.from_directories(["/tmp/not-a-cgroup"])


def test_features_of_this_host() -> None:
    features = cgroups.features()
    assert features == {
        "v1": True,
        "v2": True,
        "systemd": False,
        "systemdUser": False,
        "rdma": features["rdma"],
    }
    assert isinstance(features["rdma"], bool)
