"""`rune update`'s flags turned into a resources object, and sizes with units."""

from __future__ import annotations

import pytest

from inclavare.cgroups import UPDATE_FLAGS, CgroupError, parse_update_flags, validate_resources
from inclavare.cgroups.update import parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("64mb", 64 << 20),
        ("64MiB", 64 << 20),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("512 k", 512 << 10),
        ("2t", 2 << 40),
        ("100b", 100),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "m", "-5", "1.g", "1x", "1..5m", "1e3", "9000000p"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_every_flag() -> None:
    resources = parse_update_flags(
        {
            "blkio-weight": 300,
            "cpu-period": "100000",
            "cpu-quota": "50000",
            "cpu-burst": "1000",
            "cpu-share": "512",
            "cpu-rt-period": "1000000",
            "cpu-rt-runtime": "-1",
            "cpuset-cpus": "0-1",
            "cpuset-mems": "0",
            "cpu-idle": "1",
            "kernel-memory": "16m",
            "kernel-memory-tcp": "1m",
            "memory": "256m",
            "memory-reservation": "128m",
            "memory-swap": "1g",
            "pids-limit": 100,
        }
    )
    assert resources == {
        "blockIO": {"weight": 300},
        "cpu": {
            "period": 100000,
            "quota": 50000,
            "burst": 1000,
            "shares": 512,
            "realtimePeriod": 1000000,
            "realtimeRuntime": -1,
            "cpus": "0-1",
            "mems": "0",
            "idle": 1,
        },
        "memory": {
            "kernel": 16 << 20,
            "kernelTCP": 1 << 20,
            "limit": 256 << 20,
            "reservation": 128 << 20,
            "swap": 1 << 30,
        },
        "pids": {"limit": 100},
    }
    validate_resources(resources, partial=True)


def test_unset_flags_change_nothing() -> None:
    assert parse_update_flags({"memory": "", "blkio-weight": 0, "pids-limit": 0}) == {}


def test_unlimited_memory_frees_swap() -> None:
    assert parse_update_flags({"memory": "-1"}) == {"memory": {"limit": -1, "swap": -1}}
    assert parse_update_flags({"memory": "-1", "memory-swap": "2g"})["memory"]["swap"] == 2 << 30


def test_cpu_shares_has_both_spellings() -> None:
    assert parse_update_flags({"cpu-shares": "100"}) == {"cpu": {"shares": 100}}
    names = [names for names, _, _ in UPDATE_FLAGS]
    assert "cpu-share, cpu-shares" in names
    assert "resources, r" in names


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"memory": "lots"}, "invalid value for --memory: 'lots' is not a size"),
        ({"memory-swap": "1q"}, "invalid value for --memory-swap"),
        ({"cpu-quota": "1.5"}, "invalid value for --cpu-quota: '1.5' is not an integer"),
        ({"cpu-period": "-1"}, "invalid value for --cpu-period: '-1' is negative"),
        ({"cpu-share": "x"}, "invalid value for --cpu-share"),
        ({"l3-cache-schema": "L3:0=f"}, "--l3-cache-schema: Intel RDT is not supported"),
    ],
)
def test_bad_flags(flags: dict[str, object], message: str) -> None:
    with pytest.raises(CgroupError) as caught:
        parse_update_flags(flags)
    assert str(caught.value).startswith(message)


def test_resources_file_wins_over_flags() -> None:
    read: list[str] = []

    def read_input(source: str) -> bytes:
        read.append(source)
        return b'{"memory": {"limit": 1048576}}'

    resources = parse_update_flags({"resources": "-", "memory": "5g"}, read_input)
    assert resources == {"memory": {"limit": 1048576}}
    assert read == ["-"]


def test_resources_file_errors(tmp_path) -> None:
    with pytest.raises(CgroupError, match="No such file"):
        parse_update_flags({"resources": str(tmp_path / "absent.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{memory")
    with pytest.raises(CgroupError, match="not JSON"):
        parse_update_flags({"resources": str(bad)})
    bad.write_text("[1]")
    with pytest.raises(CgroupError, match="must be a JSON object"):
        parse_update_flags({"resources": str(bad)})
    good = tmp_path / "good.json"
    good.write_text('{"pids": {"limit": 3}}')
    assert parse_update_flags({"resources": str(good)}) == {"pids": {"limit": 3}}
