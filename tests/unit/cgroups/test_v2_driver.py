"""The cgroup v2 driver against a fake cgroup2 tree in a temporary directory: which files it
writes, with which values, and what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inclavare.cgroups import CgroupError, validate_resources
from inclavare.cgroups import v2 as v2_module
from inclavare.cgroups.devices import Allowlist
from inclavare.cgroups.v2 import V2Driver

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma"
CONTAINER_FILES = {
    "cgroup.procs": "",
    "cgroup.freeze": "0\n",
    "cgroup.events": "populated 1\nfrozen 0\n",
    "cgroup.controllers": CONTROLLERS + "\n",
    "cgroup.subtree_control": "",
    "cpu.weight": "100\n",
    "cpu.max": "max 100000\n",
    "cpu.max.burst": "0\n",
    "cpu.idle": "0\n",
    "cpu.stat": "usage_usec 10\n",
    "cpuset.cpus": "\n",
    "cpuset.mems": "\n",
    "cpuset.cpus.effective": "0-3\n",
    "memory.current": "4096\n",
    "memory.max": "max\n",
    "memory.low": "0\n",
    "memory.high": "max\n",
    "memory.swap.max": "max\n",
    "memory.swap.current": "0\n",
    "pids.max": "max\n",
    "pids.current": "1\n",
    "io.weight": "default 100\n",
    "io.max": "",
    "hugetlb.2MB.max": "max\n",
    "rdma.max": "",
}


class FakeTree:
    def __init__(self, root: Path) -> None:
        self.root = root / "cgroup"
        self.container = self.root / "kubepods" / "ctr"
        self.writes: list[tuple[str, str]] = []
        self.attached: list[tuple[str, Allowlist]] = []
        for directory in (self.root, self.root / "kubepods"):
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cgroup.controllers").write_text(CONTROLLERS + "\n")
            (directory / "cgroup.subtree_control").write_text("")
        self.container.mkdir()
        for name, content in CONTAINER_FILES.items():
            (self.container / name).write_text(content)

    def record(self, path: str, value: str, what: str = "") -> None:
        relative = str(Path(path).relative_to(self.root))
        self.writes.append((relative, value))
        if not Path(path).exists():
            raise CgroupError(f"{what}: {path} does not exist")
        Path(path).write_text(value + "\n")

    def driver(self) -> V2Driver:
        return V2Driver(str(self.container), str(self.root))

    def written(self, name: str) -> list[str]:
        return [value for path, value in self.writes if path == f"kubepods/ctr/{name}"]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTree:
    fake = FakeTree(tmp_path)
    monkeypatch.setattr(v2_module, "write_file", fake.record)

    def attach(directory: str, allowlist: Allowlist) -> None:
        fake.attached.append((directory, allowlist))

    monkeypatch.setattr("inclavare.cgroups.ebpf.attach_device_program", attach)
    return fake


def apply(tree: FakeTree, document: dict[str, Any], update: bool = False) -> None:
    driver = tree.driver()
    resources = validate_resources(document, partial=update)
    driver.check_host(resources)
    driver.apply(resources, [("c", 4, 5)], update=update)


def test_create_enables_controllers_and_converts_v1_values(tree: FakeTree) -> None:
    apply(
        tree,
        {
            "memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
            "pids": {"limit": 32},
            "blockIO": {
                "weight": 500,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 0}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "rdma": {"mlx5_0": {"hcaHandles": 2}},
            "unified": {"memory.high": "60000000"},
            "devices": [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"}],
        },
    )
    plus = " ".join(f"+{name}" for name in CONTROLLERS.split())
    assert tree.writes[:2] == [
        ("cgroup.subtree_control", plus),
        ("kubepods/cgroup.subtree_control", plus),
    ]
    assert tree.written("memory.max") == ["67108864"]
    assert tree.written("memory.swap.max") == ["67108864"]  # swap alone: 128 MiB - 64 MiB
    assert tree.written("memory.low") == ["33554432"]
    assert tree.written("cpu.weight") == ["39"]
    assert tree.written("cpu.max") == ["50000 100000"]
    assert tree.written("cpuset.cpus") == ["0-1"]
    assert tree.written("cpuset.mems") == ["0"]
    assert tree.written("pids.max") == ["32"]
    assert tree.written("io.weight") == ["default 4950", "8:0 10000"]
    assert tree.written("io.max") == ["8:0 rbps=1048576 wiops=100", "8:16 riops=max"]
    assert tree.written("hugetlb.2MB.max") == ["4194304"]
    assert tree.written("rdma.max") == ["mlx5_0 hca_handle=2 hca_object=max"]
    assert tree.written("memory.high") == ["60000000"]
    [(directory, allowlist)] = tree.attached
    assert directory == str(tree.container)
    assert allowlist.permits("c", 10, 229, "rw")
    assert allowlist.permits("c", 4, 5, "rw")  # a device the spec creates
    assert allowlist.permits("c", 1, 3, "rwm")
    assert not allowlist.permits("c", 1, 1, "r")


def test_controllers_already_enabled_are_not_written(tree: FakeTree) -> None:
    for directory in (tree.root, tree.root / "kubepods"):
        (directory / "cgroup.subtree_control").write_text(CONTROLLERS + "\n")
    apply(tree, {})
    assert not [path for path, _ in tree.writes if path.endswith("subtree_control")]
    assert len(tree.attached) == 1  # devices are always restricted at create


def test_bfq_weights_are_written_unconverted(tree: FakeTree) -> None:
    (tree.container / "io.bfq.weight").write_text("default 100\n")
    apply(
        tree, {"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 20}]}}
    )
    assert tree.written("io.bfq.weight") == ["500", "8:0 20"]
    assert tree.written("io.weight") == []


def test_unlimited_memory_and_pids(tree: FakeTree) -> None:
    apply(tree, {"memory": {"limit": -1, "reservation": -1}, "pids": {"limit": -1}})
    assert tree.written("memory.max") == ["max"]
    assert tree.written("memory.swap.max") == ["max"]
    assert tree.written("memory.low") == ["max"]
    assert tree.written("pids.max") == ["max"]


def test_update_skips_devices_and_controllers_and_keeps_the_period(tree: FakeTree) -> None:
    (tree.container / "cpu.max").write_text("20000 50000\n")
    apply(tree, {"cpu": {"period": 100000}}, update=True)
    assert tree.written("cpu.max") == ["20000 100000"]
    apply(tree, {"cpu": {"quota": 30000}}, update=True)
    assert tree.written("cpu.max")[-1] == "30000"
    assert tree.attached == []
    assert not [path for path, _ in tree.writes if path.endswith("subtree_control")]


def test_update_checks_usage_before_lowering_the_limit(tree: FakeTree) -> None:
    (tree.container / "memory.current").write_text("8192\n")
    with pytest.raises(CgroupError, match="below the container's current usage 8192"):
        apply(tree, {"memory": {"limit": 4096, "checkBeforeUpdate": True}}, update=True)
    assert tree.written("memory.max") == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"network": {"classID": 1}}, r"network\.classID: cgroup v2 has no net_cls controller"),
        (
            {"network": {"priorities": [{"name": "lo", "priority": 1}]}},
            "cgroup v2 has no net_prio controller",
        ),
        ({"cpu": {"realtimeRuntime": 100}}, "real-time CPU bandwidth does not exist on cgroup v2"),
        ({"unified": {"misc.max": "x 1"}}, "the misc controller is not available"),
    ],
)
def test_refused_on_v2(tree: FakeTree, document: dict[str, Any], message: str) -> None:
    with pytest.raises(CgroupError, match=message):
        tree.driver().check_host(validate_resources(document))


def test_a_controller_the_root_lacks_is_refused(tree: FakeTree) -> None:
    (tree.root / "cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(
        CgroupError, match=r"pids: the pids controller is not available .*cpu memory"
    ):
        tree.driver().check_host(validate_resources({"pids": {"limit": 5}}))


def test_ignored_fields_are_warnings(tree: FakeTree) -> None:
    warnings = tree.driver().check_host(
        validate_resources(
            {
                "memory": {"kernel": 10, "swappiness": 5, "disableOOMKiller": True},
                "blockIO": {"leafWeight": 100},
            }
        )
    )
    assert len(warnings) == 4
    assert all("ignored (no cgroup v2 equivalent)" in warning for warning in warnings)


def test_unknown_unified_file(tree: FakeTree) -> None:
    with pytest.raises(
        CgroupError, match=r"unified\.memory\.nonsense: this cgroup has no such file"
    ):
        apply(tree, {"unified": {"memory.nonsense": "1"}})


def test_freeze_waits_for_the_kernel(tree: FakeTree) -> None:
    driver = tree.driver()
    (tree.container / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    driver.freeze(timeout=1)
    assert tree.written("cgroup.freeze") == ["1"]
    assert driver.is_frozen()
    (tree.container / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    driver.thaw()
    assert tree.written("cgroup.freeze") == ["1", "0"]
    assert not driver.is_frozen()


def test_freeze_that_never_completes_is_undone(tree: FakeTree) -> None:
    with pytest.raises(CgroupError, match=r"did not freeze in 0\.05 s"):
        tree.driver().freeze(timeout=0.05)
    assert tree.written("cgroup.freeze") == ["1", "0"]


def test_stats_and_processes_from_the_tree(tree: FakeTree) -> None:
    (tree.container / "cgroup.procs").write_text("12\n34\n")
    driver = tree.driver()
    assert driver.processes() == [12, 34]
    stats = driver.stats()
    assert stats["memory"]["usage"]["usage"] == 4096
    assert stats["pids"] == {"current": 1}
    assert stats["cpu"]["usage"]["total"] == 10000
    assert driver.oom_kills() == 0
    (tree.container / "memory.events").write_text("low 0\nhigh 2\nmax 9\noom 3\noom_kill 2\n")
    assert driver.oom_kills() == 2
