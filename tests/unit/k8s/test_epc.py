"""The host's EPC from CPUID leaf 0x12, and the pool of devices the plugin advertises."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inclavare.k8s.epc import (
    EpcError,
    cpuinfo_has_sgx,
    device_reader,
    epc_bytes,
    host_epc_mib,
    section_size,
)
from inclavare.k8s.epcpool import (
    LIMIT_ANNOTATION,
    LIMIT_ENV,
    AllocationError,
    EpcPool,
    PoolError,
    check_resource_name,
)

MIB = 1 << 20


def section(base: int, size: int) -> tuple[int, int, int, int]:
    """CPUID 0x12 registers of one EPC section, as the SDM lays them out."""
    return (
        (base & 0xFFFFF000) | 1,
        (base >> 32) & 0xFFFFF,
        (size & 0xFFFFF000) | 1,
        (size >> 32) & 0xFFFFF,
    )


def write_cpuid_file(path: Path, sections: list[tuple[int, int]]) -> None:
    """A sparse file laid out like /dev/cpu/N/cpuid for leaf 0x12."""
    with open(path, "wb") as device:
        for subleaf, (base, size) in enumerate([*sections, (0, 0)], start=2):
            registers = section(base, size) if size else (0, 0, 0, 0)
            device.seek(0x12 | (subleaf << 32))
            device.write(struct.pack("<4I", *registers))


def test_sections_are_summed_until_an_invalid_subleaf() -> None:
    table = {
        (0x12, 2): section(0x80000000, 93 * MIB),
        (0x12, 3): section(0x1_0000_0000, 4096 * MIB),
        (0x12, 4): (0, 0, 0, 0),
        (0x12, 5): section(0, 999 * MIB),  # after the end: not read
    }
    assert epc_bytes(lambda leaf, sub: table[(leaf, sub)]) == (93 + 4096) * MIB


@given(st.integers(0, (1 << 52) - 1))
def test_section_size_round_trips_every_page_aligned_size(size: int) -> None:
    aligned = size & ~0xFFF
    assert section_size(section(0, aligned)) == aligned


def test_cpuinfo_flag() -> None:
    assert cpuinfo_has_sgx("processor\t: 0\nflags\t\t: fpu vme sgx sgx_lc\n")
    assert not cpuinfo_has_sgx("flags\t\t: fpu vme sgx_lc\n")
    assert not cpuinfo_has_sgx("")


def test_host_epc_through_a_cpuid_device_file(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu sgx\n")
    cpuid = tmp_path / "cpuid"
    write_cpuid_file(cpuid, [(0x80000000, 64 * MIB), (0x1_0000_0000, 128 * MIB)])
    assert host_epc_mib(str(cpuinfo), str(cpuid)) == 192
    assert device_reader(str(cpuid))(0x12, 4) == (0, 0, 0, 0)


def test_no_sgx_flag_means_no_epc_and_sgx_without_cpuid_is_an_error(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu\n")
    assert host_epc_mib(str(cpuinfo), str(tmp_path / "absent")) == 0
    cpuinfo.write_text("flags\t: fpu sgx\n")
    with pytest.raises(EpcError, match=r"cannot be read .*modprobe cpuid.*--epc-mib"):
        host_epc_mib(str(cpuinfo), str(tmp_path / "absent"))


def test_this_host_without_sgx_has_no_epc() -> None:
    if cpuinfo_has_sgx(Path("/proc/cpuinfo").read_text()):
        pytest.skip("this host has SGX")
    assert host_epc_mib() == 0


# --- the pool -------------------------------------------------------------------------------


def test_pool_ids_and_budget() -> None:
    pool = EpcPool(128, 4)
    assert pool.count == 32
    assert pool.ids[0] == "epc-0" and pool.ids[-1] == "epc-31"
    assert pool.budget_mib(["epc-3", "epc-0"]) == 8
    assert pool.container_settings(8) == ({LIMIT_ENV: "8"}, {LIMIT_ANNOTATION: "8"})


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "names no devices"),
        (["epc-32"], "unknown device id 'epc-32': this plugin has epc-0..epc-31"),
        (["epc-01"], "unknown device id 'epc-01'"),
        (["gpu-1"], "unknown device id 'gpu-1'"),
        (["epc-"], "unknown device id 'epc-'"),
        (["epc-1", "epc-1"], "device id epc-1 is requested twice"),
    ],
)
def test_malformed_allocations(ids: list[str], message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        EpcPool(32).budget_mib(ids)


def test_containers_of_one_request_do_not_share_devices() -> None:
    with pytest.raises(AllocationError, match="epc-2 is requested twice"):
        EpcPool(8).check_distinct([["epc-1", "epc-2"], ["epc-2"]])


def test_preferred_allocation_takes_must_include_then_the_lowest() -> None:
    pool = EpcPool(16)
    available = ["epc-9", "epc-3", "epc-12", "epc-1", "epc-5"]
    assert pool.preferred(available, ["epc-12"], 3) == ["epc-12", "epc-1", "epc-3"]
    assert pool.preferred(available, [], 0) == []
    with pytest.raises(AllocationError, match="6 devices asked for, 5"):
        pool.preferred(available, [], 6)
    with pytest.raises(AllocationError, match="'epc-2' must be included but is not available"):
        pool.preferred(available, ["epc-2"], 2)


@given(st.lists(st.text(max_size=12), max_size=8))
def test_any_id_list_is_accepted_or_refused_cleanly(ids: list[str]) -> None:
    pool = EpcPool(64)
    try:
        assert pool.budget_mib(ids) == len(ids)
    except AllocationError as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("total", "unit", "message"),
    [
        (0, 1, "less than one device"),
        (3, 4, "less than one device"),
        (8, 0, "at least 1 MiB"),
        (1 << 20, 1, "use --unit-mib 16 or more"),
    ],
)
def test_pool_sizes_refused(total: int, unit: int, message: str) -> None:
    with pytest.raises(PoolError, match=message):
        EpcPool(total, unit)


def test_resource_names() -> None:
    assert check_resource_name("inclavare.io/epc") == "inclavare.io/epc"
    assert check_resource_name("sgx.intel.com/epc") == "sgx.intel.com/epc"
    for bad in ("epc", "kubernetes.io/epc", "x.kubernetes.io/epc", "inclavare.io/", "a/b/c"):
        with pytest.raises(PoolError, match="invalid resource name"):
            check_resource_name(bad)
