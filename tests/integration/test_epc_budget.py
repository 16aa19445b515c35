"""The EPC budget of a sim enclave container (what the Kubernetes device plugin allocates):
rune limits the container's memory cgroup to it, an enclave that outgrows it is killed by the
kernel's OOM killer, and `rune run` and `rune events` say so."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune, own_cgroup_dirs
from tests.integration.test_enclave import create_fails, enclave, error_line

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _sim_platform(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(tmp_path_factory.getbasetemp() / "sim-epc"))


def memory_limit(container_id: str) -> int:
    for directory in own_cgroup_dirs(container_id):
        for name in ("memory.limit_in_bytes", "memory.max"):
            path = Path(directory) / name
            if path.exists():
                return int(path.read_text())
    raise AssertionError(f"no memory cgroup for {container_id}")


def test_enclave_over_its_budget_is_oom_killed_and_rune_says_why(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    enclave(bundle, "builtin:native").set_args(
        "dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"
    )
    bundle.config["process"]["env"].append("ENCLAVE_EPC_LIMIT_MIB=64")
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 128 + 9, result.stderr
    assert error_line(result.stderr) == (
        f"enclave container {container_id} exceeded its EPC budget of 64 MiB: "
        "the kernel's OOM killer killed it"
    )
    leaks.assert_clean(container_id)


def test_enclave_within_its_budget_runs(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    enclave(bundle, "builtin:native").set_args(
        "dd", "if=/dev/zero", "of=/dev/null", "bs=16M", "count=4"
    )
    bundle.config["process"]["env"].append("ENCLAVE_EPC_LIMIT_MIB=64")
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 0, result.stderr
    assert "limited to 64 MiB by its EPC budget" in result.stderr
    assert "exceeded" not in result.stderr
    leaks.assert_clean(container_id)


@pytest.mark.parametrize(
    ("settings", "spec_limit", "expected"),
    [
        (["INCLAVARE_EPC_LIMIT_MIB=96"], None, 96 * MIB),
        (["ENCLAVE_EPC_LIMIT_MIB=96"], 80 * MIB, 80 * MIB),  # the spec's lower limit stays
        (["ENCLAVE_EPC_LIMIT_MIB=72", "INCLAVARE_EPC_LIMIT_MIB=96"], 200 * MIB, 72 * MIB),
    ],
)
def test_memory_cgroup_is_limited_to_the_budget(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    settings: list[str],
    spec_limit: int | None,
    expected: int,
) -> None:
    enclave(bundle, "builtin:native").set_args("sleep", "60")
    bundle.config["process"]["env"] += settings
    if spec_limit is not None:
        bundle.config["linux"].setdefault("resources", {})["memory"] = {"limit": spec_limit}
    bundle.write()
    container_id = leaks.new_id()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    try:
        assert memory_limit(container_id) == expected
        state = json.loads((rune.root / container_id / "state.json").read_text())
        assert state["enclave"]["epc_limit_mib"] == int(settings[0].split("=")[1])
    finally:
        rune("delete", "--force", container_id)
    leaks.assert_clean(container_id)


def test_events_report_the_oom_kill_as_the_epc_budget(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    # The shell survives (the OOM killer picks the largest process, dd) and keeps the
    # container running while `events` watches.
    enclave(bundle, "builtin:native").set_args(
        "sh", "-c", "sleep 1; dd if=/dev/zero of=/dev/null bs=256M count=1; sleep 60"
    )
    bundle.config["process"]["env"].append("ENCLAVE_EPC_LIMIT_MIB=64")
    bundle.write()
    container_id = leaks.new_id()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    events = subprocess.Popen(
        rune.command("events", "--interval", "200ms", container_id),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert events.stdout is not None
        deadline = time.monotonic() + 20
        oom = None
        for line in events.stdout:
            event = json.loads(line)
            if event["type"] == "oom":
                oom = event
                break
            assert time.monotonic() < deadline, "no oom event"
        assert oom == {
            "type": "oom",
            "id": container_id,
            "data": {"reason": "enclave EPC budget exceeded", "epcLimitMiB": 64},
        }
    finally:
        events.kill()
        events.wait()
        rune("delete", "--force", container_id)
    leaks.assert_clean(container_id)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "99999999999999"])
def test_invalid_budget_is_refused_at_create(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, value: str
) -> None:
    enclave(bundle, "builtin:native").set_args("true")
    bundle.config["process"]["env"].append(f"ENCLAVE_EPC_LIMIT_MIB={value}")
    stderr = create_fails(rune, bundle, leaks, tmp_path)
    assert error_line(stderr) == (
        f"invalid enclave EPC limit {value!r} (ENCLAVE_EPC_LIMIT_MIB): a whole number of MiB "
        "between 1 and 1099511627776"
    )


def test_update_cannot_lift_the_memory_limit_above_the_budget(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    enclave(bundle, "builtin:native").set_args("sleep", "60")
    bundle.config["process"]["env"].append("ENCLAVE_EPC_LIMIT_MIB=64")
    bundle.write()
    container_id = leaks.new_id()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    try:
        for flags, shown in (
            (["--memory", "128m"], f"{128 * MIB} bytes"),
            (["--memory", "-1"], "unlimited"),
        ):
            refused = rune("update", *flags, container_id, check=False)
            assert refused.returncode == 1
            assert error_line(refused.stderr) == (
                f"memory limit {shown} exceeds the EPC budget of enclave container "
                f"{container_id} (64 MiB)"
            )
            assert memory_limit(container_id) == 64 * MIB
        rune("update", "--memory", "32m", "--memory-swap", "32m", container_id)
        assert memory_limit(container_id) == 32 * MIB
    finally:
        rune("delete", "--force", container_id)
    leaks.assert_clean(container_id)
