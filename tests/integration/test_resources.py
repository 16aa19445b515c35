"""Cgroup resources through rune: limits at create, pause/resume, update, events, features;
and seccomp profiles from config.json."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune, own_cgroup_dirs


def cgroup_file(container_id: str, controller: str, name: str) -> str:
    for directory in own_cgroup_dirs(container_id):
        if f"/{controller}/" in directory:
            return Path(directory, name).read_text().strip()
    raise AssertionError(f"no {controller} hierarchy for {container_id}")


@pytest.fixture
def limited(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> str:
    container_id = leaks.new_id()
    bundle.config["linux"]["resources"] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": 64 * 1024 * 1024},
        "pids": {"limit": 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
    }
    bundle.set_args("sleep", "300").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    return container_id


def test_limits_are_applied_at_create(rune: Rune, limited: str) -> None:
    assert cgroup_file(limited, "memory", "memory.limit_in_bytes") == str(64 * 1024 * 1024)
    assert cgroup_file(limited, "pids", "pids.max") == "20"
    assert cgroup_file(limited, "cpu", "cpu.shares") == "512"
    assert cgroup_file(limited, "cpu", "cpu.cfs_quota_us") == "50000"


def test_pids_limit_is_enforced(rune: Rune, limited: str) -> None:
    result = rune(
        "exec",
        limited,
        "sh",
        "-c",
        "for i in $(seq 40); do sleep 5 & done 2>&1; echo done",
        check=False,
    )
    assert "can't fork" in result.stdout + result.stderr  # the 20th process is refused


def test_devices_are_denied_but_the_defaults(rune: Rune, limited: str) -> None:
    output = rune(
        "exec",
        "--cap",
        "CAP_MKNOD",
        limited,
        "sh",
        "-c",
        "echo x > /dev/null && echo null-ok; mknod /tmp/disk b 8 0 && head -c1 /tmp/disk"
        " 2>&1 || echo disk-refused",
        check=False,
    ).stdout
    assert "null-ok" in output
    assert "disk-refused" in output


def test_pause_and_resume(rune: Rune, limited: str) -> None:
    rune("pause", limited)
    assert rune.state(limited)["status"] == "paused"
    again = rune("pause", limited, check=False)
    assert again.returncode == 1 and f"container {limited} is already paused" in again.stderr
    refused = rune("exec", limited, "true", check=False)
    assert "cannot exec in a paused container" in refused.stderr
    rune("resume", limited)
    assert rune.state(limited)["status"] == "running"
    not_paused = rune("resume", limited, check=False)
    assert not_paused.returncode == 1 and "container not paused" in not_paused.stderr
    rune("pause", limited)
    rune("delete", "--force", limited)  # a paused container can be deleted


def test_update(rune: Rune, limited: str, tmp_path: Path) -> None:
    rune("update", "--memory", "128m", "--pids-limit", "30", limited)
    assert cgroup_file(limited, "memory", "memory.limit_in_bytes") == str(128 * 1024 * 1024)
    assert cgroup_file(limited, "pids", "pids.max") == "30"
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"cpu": {"shares": 256}}))
    rune("update", "-r", str(resources), limited)
    assert cgroup_file(limited, "cpu", "cpu.shares") == "256"
    assert cgroup_file(limited, "pids", "pids.max") == "30"  # kept from the first update
    bad = rune("update", "--memory", "lots", limited, check=False)
    assert bad.returncode == 1 and "memory" in bad.stderr


def test_events_stats(rune: Rune, limited: str) -> None:
    event: dict[str, Any] = json.loads(rune("events", "--stats", limited).stdout)
    assert event["type"] == "stats" and event["id"] == limited
    assert event["data"]["pids"]["current"] == 1
    assert event["data"]["memory"]["usage"]["limit"] == 64 * 1024 * 1024
    assert event["data"]["cpu"]["usage"]["total"] > 0


def test_invalid_resources_fail_create_and_leave_nothing(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    container_id = leaks.new_id()
    bundle.config["linux"]["resources"] = {"memory": {"limit": "a lot"}}
    bundle.write()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "linux.resources.memory.limit: must be an integer" in result.stderr
    leaks.assert_clean(container_id)


def test_features(rune: Rune) -> None:
    document = json.loads(rune("features").stdout)
    assert document["ociVersionMax"] == "1.1.0"
    assert "createRuntime" in document["hooks"]
    assert "rbind" in document["mountOptions"]
    linux = document["linux"]
    assert {"pid", "network", "mount", "user", "cgroup"} <= set(linux["namespaces"])
    assert "CAP_SYS_ADMIN" in linux["capabilities"]
    assert linux["cgroup"]["v1"] is True
    assert linux["seccomp"]["enabled"] is True
    assert "SCMP_ACT_ERRNO" in linux["seccomp"]["actions"]


def test_seccomp_profile_from_config(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["root"]["readonly"] = False
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"] if os.uname().machine == "x86_64" else [],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        ],
    }
    bundle.set_args("sh", "-c", "mkdir /tmp/blocked 2>&1; echo $?").write()
    output = rune("run", "-b", str(bundle.path), leaks.new_id()).stdout
    assert "Operation not permitted" in output
    assert not (bundle.rootfs / "tmp" / "blocked").exists()


def test_an_unknown_syscall_in_the_profile_fails_create(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    container_id = leaks.new_id()
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}],
    }
    bundle.write()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "unknown syscall 'no_such_call'" in result.stderr
    leaks.assert_clean(container_id)


def test_events_stream_until_the_container_stops(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    container_id = leaks.new_id()
    bundle.set_args("sleep", "1").write()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "o")
    started = time.monotonic()
    result = rune("events", "--interval", "200ms", container_id, timeout=20)
    assert time.monotonic() - started < 10
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) >= 2 and all(line["type"] == "stats" for line in lines)
    rune("delete", container_id)
