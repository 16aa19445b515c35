"""The platform identity: created once, private, and safe to create from many processes."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.pck import pck_info
from inclavare.tee.sim.errors import PlatformError
from inclavare.tee.sim.identity import PLATFORM_FILES, SIM_FMSPC
from inclavare.tee.sim.store import load_platform, root_ca_path

from ..attestation.conftest import REPO_ROOT


def test_first_use_creates_a_private_identity(fresh_sim_dir: Path) -> None:
    platform = load_platform()
    assert platform.directory == str(fresh_sim_dir)
    assert stat.S_IMODE(os.stat(fresh_sim_dir).st_mode) == 0o700
    assert sorted(os.listdir(fresh_sim_dir)) == sorted(PLATFORM_FILES)
    for name in PLATFORM_FILES:
        assert stat.S_IMODE(os.stat(fresh_sim_dir / name).st_mode) == 0o600, name
    assert root_ca_path() == fresh_sim_dir / "root-ca.pem"
    assert root_ca_path().read_bytes() == platform.root_ca_pem


def test_later_uses_read_the_same_identity(fresh_sim_dir: Path) -> None:
    first = load_platform()
    second = load_platform()
    assert first == second
    assert first.report_keys == second.report_keys


def test_the_certificates_say_simulated_and_chain_to_the_root(fresh_sim_dir: Path) -> None:
    platform = load_platform()
    leaf, platform_ca, root = parse_certificates(platform.pck_chain_pem)
    assert all("simulated" in cert.subject for cert in (leaf, platform_ca, root))
    assert root.der == parse_certificates(platform.root_ca_pem)[0].der
    assert leaf.is_ca() is False and platform_ca.is_ca() and root.is_ca()
    assert leaf.signature_verified_by(platform_ca.public_key())
    assert platform_ca.signature_verified_by(root.public_key())
    assert pck_info(leaf).fmspc == SIM_FMSPC


def test_the_report_keys_change_with_the_boot(fresh_sim_dir: Path) -> None:
    from dataclasses import replace

    platform = load_platform()
    assert platform.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    rebooted = replace(platform, boot_id="00000000-0000-0000-0000-000000000000")
    assert rebooted.report_keys.root != platform.report_keys.root
    assert rebooted.report_keys.key_id != platform.report_keys.key_id
    assert platform.report_keys.key_id.startswith(b"SIMULATED-REPORT")


def test_concurrent_first_use_creates_one_identity(tmp_path: Path) -> None:
    """Eight processes create the platform at the same moment: all end with the same one."""
    store = tmp_path / "sim"
    program = (
        "import hashlib, sys\n"
        "from inclavare.tee.sim.store import load_platform\n"
        "sys.stdin.read()\n"  # wait for the start signal
        "platform = load_platform()\n"
        "print(hashlib.sha256(platform.root_ca_pem + platform.secret).hexdigest())\n"
    )
    env = {**os.environ, "INCLAVARE_SIM_DIR": str(store), "PYTHONPATH": str(REPO_ROOT / "src")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", program],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(8)
    ]
    for process in processes:  # all are started: now let them race
        assert process.stdin is not None
        process.stdin.close()
    results = []
    for process in processes:
        assert process.stdout is not None and process.stderr is not None
        results.append((process.stdout.read(), process.stderr.read()))
        process.wait(timeout=60)
    assert all(process.returncode == 0 for process in processes), results
    identities = {out.strip() for out, _ in results}
    assert len(identities) == 1
    assert sorted(os.listdir(tmp_path)) == ["sim"]  # no staging directory left behind
    assert sorted(os.listdir(store)) == sorted(PLATFORM_FILES)
    final = load_platform(store)
    assert hashlib.sha256(final.root_ca_pem + final.secret).hexdigest() in identities


def test_an_existing_empty_directory_is_filled(tmp_path: Path) -> None:
    store = tmp_path / "sim"
    store.mkdir(mode=0o755)
    load_platform(store)
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700


def test_an_incomplete_store_is_not_overwritten(tmp_path: Path) -> None:
    store = tmp_path / "sim"
    store.mkdir(mode=0o700)
    (store / "root-ca.pem").write_text("left over")
    with pytest.raises(PlatformError, match=r"incomplete \(missing pck-chain.pem"):
        load_platform(store)
    assert os.listdir(store) == ["root-ca.pem"]


def test_keys_readable_by_others_are_refused(fresh_sim_dir: Path) -> None:
    load_platform()
    os.chmod(fresh_sim_dir / "attestation.key", 0o644)
    with pytest.raises(PlatformError, match=r"attestation\.key is accessible to others"):
        load_platform()
    os.chmod(fresh_sim_dir / "attestation.key", 0o600)
    os.chmod(fresh_sim_dir, 0o755)
    with pytest.raises(PlatformError, match="accessible to others \\(mode 0755\\)"):
        load_platform()
