"""`linux.resources` validation: what it accepts, what it refuses and with which message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.cgroups import CgroupError, validate_resources
from inclavare.cgroups.resources import (
    BlockIO,
    Cpu,
    DeviceRule,
    HugepageLimit,
    Memory,
    Resources,
    ThrottleDevice,
    WeightDevice,
    blkio_weight_to_io_weight,
    cpu_shares_to_weight,
    hugepage_size_bytes,
    merge_resources,
    parse_cpu_list,
    swap_to_v2,
)

PREFIX = "config.json: linux.resources"


def test_empty_object_is_empty_resources() -> None:
    resources = validate_resources({})
    assert resources.is_empty()
    assert resources.devices is None


def test_a_full_valid_document() -> None:
    resources = validate_resources(
        {
            "memory": {
                "limit": 104857600,
                "reservation": 52428800,
                "swap": 209715200,
                "kernel": -1,
                "kernelTCP": 1048576,
                "swappiness": 0,
                "disableOOMKiller": True,
            },
            "cpu": {
                "shares": 1024,
                "quota": 50000,
                "period": 100000,
                "realtimeRuntime": 10000,
                "realtimePeriod": 100000,
                "cpus": "0-1,3",
                "mems": "0",
                "idle": 1,
            },
            "pids": {"limit": 64},
            "blockIO": {
                "weight": 500,
                "leafWeight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 600}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
            ],
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"memory.high": "50000000"},
            "someFutureField": {"ignored": True},
        }
    )
    memory = Memory()
    memory.limit, memory.reservation, memory.swap = 104857600, 52428800, 209715200
    memory.kernel, memory.kernel_tcp, memory.swappiness = -1, 1048576, 0
    memory.disable_oom_killer = True
    assert resources.memory == memory
    cpu = Cpu()
    cpu.shares, cpu.quota, cpu.period = 1024, 50000, 100000
    cpu.realtime_runtime, cpu.realtime_period = 10000, 100000
    cpu.cpus, cpu.mems, cpu.idle = "0-1,3", "0", 1
    assert resources.cpu == cpu
    assert resources.pids_limit == 64
    block_io = BlockIO()
    block_io.weight, block_io.leaf_weight = 500, 300
    block_io.weight_devices = [WeightDevice(8, 0, 600, None)]
    block_io.throttle_read_bps = [ThrottleDevice(8, 0, 1048576)]
    block_io.throttle_write_iops = [ThrottleDevice(8, 16, 100)]
    assert resources.block_io == block_io
    assert resources.hugepage_limits == [HugepageLimit("2MB", 4194304)]
    assert resources.network is not None
    assert resources.network.class_id == 1048577
    assert resources.network.priorities == [("eth0", 5)]
    assert resources.devices == [
        DeviceRule(False, "a", -1, -1, "rwm"),
        DeviceRule(True, "c", 10, 229, "rw"),
    ]
    assert resources.rdma["mlx5_1"].hca_handles == 3
    assert resources.unified == {"memory.high": "50000000"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"memory": {"limit": 0}}, None),  # 0 is the spec's "unset"
        ({"memory": {"limit": -1}}, -1),
        ({"memory": {"limit": None}}, None),
        ({"memory": {"limit": 1}}, 1),
    ],
)
def test_memory_limit_values(document: dict[str, Any], expected: int | None) -> None:
    memory = validate_resources(document).memory
    assert memory is not None and memory.limit == expected


def test_swap_unlimited_with_a_limit_and_equal_to_it() -> None:
    assert validate_resources({"memory": {"limit": 10, "swap": -1}}).memory is not None
    memory = validate_resources({"memory": {"limit": 4096, "swap": 4096}}).memory
    assert memory is not None and memory.swap == 4096


def test_partial_allows_a_quota_alone() -> None:
    cpu = validate_resources({"cpu": {"quota": 20000}}, partial=True).cpu
    assert cpu is not None and cpu.quota == 20000 and cpu.period is None


def test_device_defaults_and_order_of_access_letters() -> None:
    rules = validate_resources(
        {"devices": [{"allow": True}, {"allow": False, "type": "b", "major": 8, "access": "mwr"}]}
    ).devices
    assert rules == [DeviceRule(True, "a"), DeviceRule(False, "b", 8, -1, "rwm")]
    assert rules[1].v1_line() == "b 8:* rwm"
    assert rules[0].v1_line() == "a"


INVALID: list[tuple[object, str]] = [
    ("not an object", ": must be an object, got a string"),
    ({"memory": []}, ".memory: must be an object, got a list"),
    ({"memory": {"limit": "1g"}}, ".memory.limit: must be an integer, got a string"),
    ({"memory": {"limit": 1.5}}, ".memory.limit: must be an integer, got a number with a fraction"),
    ({"memory": {"limit": True}}, ".memory.limit: must be an integer, got a boolean"),
    ({"memory": {"limit": -2}}, ".memory.limit: must be between -1 and 9223372036854775807"),
    ({"memory": {"limit": 1 << 63}}, ".memory.limit: must be between -1 and"),
    ({"memory": {"reservation": -5}}, ".memory.reservation: must be between -1"),
    ({"memory": {"swap": 1000}}, ".memory.swap: a memory+swap limit needs a memory.limit"),
    ({"memory": {"limit": -1, "swap": 1000}}, ".memory.swap: a memory+swap limit needs a"),
    ({"memory": {"limit": 2000, "swap": 1000}}, ".memory.swap: below memory.limit (1000 < 2000)"),
    ({"memory": {"swappiness": 101}}, ".memory.swappiness: must be between 0 and 100, got 101"),
    ({"memory": {"swappiness": -1}}, ".memory.swappiness: must be between 0 and 100, got -1"),
    ({"memory": {"disableOOMKiller": 1}}, ".memory.disableOOMKiller: must be a boolean"),
    ({"memory": {"kernelTCP": "x"}}, ".memory.kernelTCP: must be an integer, got a string"),
    ({"cpu": {"shares": 1}}, ".cpu.shares: must be between 2 and 262144, got 1"),
    ({"cpu": {"shares": 300000}}, ".cpu.shares: must be between 2 and 262144"),
    ({"cpu": {"quota": 50000}}, ".cpu.quota: cpu.quota without cpu.period"),
    ({"cpu": {"quota": 999, "period": 100000}}, ".cpu.quota: must be -1 or at least 1000"),
    ({"cpu": {"quota": -7, "period": 100000}}, ".cpu.quota: must be between -1 and"),
    ({"cpu": {"period": 999}}, ".cpu.period: must be between 1000 and 1000000, got 999"),
    ({"cpu": {"period": 2000000}}, ".cpu.period: must be between 1000 and 1000000"),
    (
        {"cpu": {"quota": 5000, "period": 100000, "burst": 6000}},
        ".cpu.burst: above cpu.quota (6000 > 5000)",
    ),
    (
        {"cpu": {"realtimeRuntime": 2000, "realtimePeriod": 1000}},
        ".cpu.realtimeRuntime: above cpu.realtimePeriod (2000 > 1000)",
    ),
    ({"cpu": {"cpus": "0-"}}, '.cpu.cpus: "0-" is not a list of numbers and ranges'),
    ({"cpu": {"cpus": "3-1"}}, '.cpu.cpus: "3-1" is not a list'),
    ({"cpu": {"mems": "a"}}, '.cpu.mems: "a" is not a list'),
    ({"cpu": {"mems": 0}}, ".cpu.mems: must be a string, got an integer"),
    ({"cpu": {"idle": 2}}, ".cpu.idle: must be between 0 and 1, got 2"),
    ({"pids": {"limit": -2}}, ".pids.limit: must be between -1 and"),
    ({"pids": {"limit": "10"}}, ".pids.limit: must be an integer, got a string"),
    ({"pids": 5}, ".pids: must be an object, got an integer"),
    ({"blockIO": {"weight": 5}}, ".blockIO.weight: must be between 10 and 1000, got 5"),
    ({"blockIO": {"weight": 1001}}, ".blockIO.weight: must be between 10 and 1000, got 1001"),
    ({"blockIO": {"leafWeight": 9}}, ".blockIO.leafWeight: must be between 10 and 1000"),
    (
        {"blockIO": {"weightDevice": [{"major": 8, "minor": 0}]}},
        ".blockIO.weightDevice[0]: needs a weight or a leafWeight",
    ),
    (
        {"blockIO": {"weightDevice": [{"minor": 0, "weight": 100}]}},
        ".blockIO.weightDevice[0].major: required",
    ),
    (
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}},
        ".blockIO.throttleReadBpsDevice[0].rate: required",
    ),
    (
        {"blockIO": {"throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": -1}]}},
        ".blockIO.throttleWriteBpsDevice[0].rate: must be between 0 and",
    ),
    (
        {"blockIO": {"throttleReadIOPSDevice": {}}},
        ".blockIO.throttleReadIOPSDevice: must be a list",
    ),
    ({"hugepageLimits": [{"limit": 1}]}, ".hugepageLimits[0].pageSize: required"),
    (
        {"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
        '.hugepageLimits[0].pageSize: "2M" is not a page size',
    ),
    (
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}, {"pageSize": "2MB", "limit": 2}]},
        '.hugepageLimits[1].pageSize: "2MB" is limited twice',
    ),
    ({"hugepageLimits": [{"pageSize": "2MB"}]}, ".hugepageLimits[0].limit: required"),
    ({"network": {"classID": -1}}, ".network.classID: must be between 0 and 4294967295"),
    (
        {"network": {"priorities": [{"name": "eth0"}]}},
        ".network.priorities[0].priority: required",
    ),
    ({"network": {"priorities": [{"name": "", "priority": 1}]}}, ".network.priorities[0].name"),
    ({"devices": {}}, ".devices: must be a list, got an object"),
    ({"devices": [{"access": "rwm"}]}, ".devices[0].allow: required"),
    ({"devices": [{"allow": "yes"}]}, ".devices[0].allow: must be a boolean, got a string"),
    ({"devices": [{"allow": True, "type": "x"}]}, '.devices[0].type: unknown device type "x"'),
    (
        {"devices": [{"allow": True, "type": "c", "access": "rwx"}]},
        '.devices[0].access: unknown device access "x" in "rwx"',
    ),
    ({"devices": [{"allow": True, "access": "rr"}]}, '.devices[0].access: "rr" repeats a letter'),
    (
        {"devices": [{"allow": True, "type": "c", "major": -3}]},
        ".devices[0].major: must be between -1 and 4095, got -3",
    ),
    (
        {"devices": [{"allow": True, "type": "a", "major": 1}]},
        '.devices[0].type: type "a" (all devices) takes no major or minor number',
    ),
    ({"devices": ["c 1:3 rwm"]}, ".devices[0]: must be an object, got a string"),
    (
        {"devices": [{"allow": True, "type": "c", "minor": 1 << 20}]},
        ".devices[0].minor: must be between -1 and 1048575",
    ),
    ({"rdma": {"mlx5": {"hcaHandles": -1}}}, ".rdma.mlx5.hcaHandles: must be between 0 and"),
    ({"rdma": []}, ".rdma: must be an object, got a list"),
    ({"unified": {"memory.high": 5}}, ".unified.memory.high: must be a string, got an integer"),
    ({"unified": {"cgroup.procs": "1"}}, ".unified: 'cgroup.procs' is not a controller's file"),
    ({"unified": {"../x.y": "1"}}, ".unified: '../x.y' is not a controller's file"),
    ({"unified": {"nodot": "1"}}, ".unified: 'nodot' is not a controller's file"),
]


@pytest.mark.parametrize(("document", "message"), INVALID)
def test_invalid_resources_name_the_field(document: object, message: str) -> None:
    with pytest.raises(CgroupError) as caught:
        validate_resources(document)
    text = str(caught.value)
    assert text.startswith(PREFIX + message), text
    assert "\n" not in text


def test_the_prefix_is_the_caller_s() -> None:
    with pytest.raises(CgroupError, match=r"^resources\.memory\.limit: must be an integer"):
        validate_resources({"memory": {"limit": "x"}}, where="resources")


def test_cpu_list_parser() -> None:
    assert parse_cpu_list("0-3,6,8-9") == [0, 1, 2, 3, 6, 8, 9]
    assert parse_cpu_list("") == []
    for bad in ("1,", ",1", "a", "1-", "-1", "2-1", "1 2", "70000"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


def test_hugepage_sizes() -> None:
    assert hugepage_size_bytes("2MB") == 2 << 20
    assert hugepage_size_bytes("1GB") == 1 << 30
    assert hugepage_size_bytes("64KB") == 64 << 10
    for bad in ("2mb", "0MB", "02MB", "MB", "2TB", "2 MB"):
        with pytest.raises(ValueError):
            hugepage_size_bytes(bad)


def test_v1_to_v2_conversions() -> None:
    assert cpu_shares_to_weight(2) == 1
    assert cpu_shares_to_weight(1024) == 39
    assert cpu_shares_to_weight(262144) == 10000
    assert blkio_weight_to_io_weight(10) == 1
    assert blkio_weight_to_io_weight(500) == 4950
    assert blkio_weight_to_io_weight(1000) == 10000
    assert swap_to_v2(-1, 100) == -1
    assert swap_to_v2(300, 100) == 200
    assert swap_to_v2(100, 100) == 0
    with pytest.raises(CgroupError, match=r"needs a memory\.limit"):
        swap_to_v2(300, None)


def test_merge_replaces_given_values_and_keeps_the_rest() -> None:
    current = {
        "memory": {"limit": 100, "swap": 200},
        "cpu": {"shares": 512, "cpus": "0"},
        "devices": [{"allow": False}],
    }
    update = {"memory": {"limit": 150, "swap": None}, "pids": {"limit": 5}}
    merged = merge_resources(current, update)
    assert merged == {
        "memory": {"limit": 150, "swap": 200},
        "cpu": {"shares": 512, "cpus": "0"},
        "devices": [{"allow": False}],
        "pids": {"limit": 5},
    }
    assert current["memory"] == {"limit": 100, "swap": 200}  # not modified in place
    assert merge_resources(None, {"a": 1}) == {"a": 1}


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 65), max_value=1 << 65),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "limit",
        "reservation",
        "swap",
        "kernel",
        "kernelTCP",
        "swappiness",
        "disableOOMKiller",
        "shares",
        "quota",
        "period",
        "burst",
        "realtimeRuntime",
        "realtimePeriod",
        "cpus",
        "mems",
        "idle",
        "weight",
        "leafWeight",
        "weightDevice",
        "throttleReadBpsDevice",
        "major",
        "minor",
        "rate",
        "pageSize",
        "allow",
        "type",
        "access",
        "classID",
        "priorities",
        "name",
        "priority",
        "hcaHandles",
    ]
)
SECTION = st.dictionaries(FIELD_NAMES, JSON | st.lists(st.dictionaries(FIELD_NAMES, JSON)))
RESOURCES = st.fixed_dictionaries(
    {},
    optional={
        "memory": SECTION,
        "cpu": SECTION,
        "pids": SECTION,
        "blockIO": SECTION,
        "network": SECTION,
        "hugepageLimits": st.lists(SECTION, max_size=3),
        "devices": st.lists(SECTION, max_size=3),
        "rdma": st.dictionaries(st.text(max_size=5), SECTION, max_size=2),
        "unified": st.dictionaries(st.text(max_size=12), JSON, max_size=2),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RESOURCES | JSON)
def test_arbitrary_documents_give_resources_or_one_line_errors(document: object) -> None:
    try:
        result = validate_resources(document)
    except CgroupError as error:
        text = str(error)
        assert text.startswith(PREFIX)
        assert "\n" not in text
        return
    assert isinstance(result, Resources)
    if result.memory is not None and result.memory.swap not in (None, -1):
        assert result.memory.limit is not None
        assert result.memory.swap >= result.memory.limit
    if result.cpu is not None and result.cpu.quota not in (None, -1):
        assert result.cpu.period is not None
