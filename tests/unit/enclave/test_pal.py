"""The PAL loader against the skeleton (API versions 1, 2, 3) and against broken PALs."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inclavare.attestation.certificate import parse_certificates
from inclavare.attestation.inputs import VerificationInputs
from inclavare.attestation.trust import TrustStore
from inclavare.attestation.verifier import verify_evidence
from inclavare.enclave.pal import Pal, PalCallError, PalError, PalLoadError, load_pal
from inclavare.enclave.runtime import EnclaveRuntime
from inclavare.tee.sim.launch import check_launch
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity, TrustedFile
from inclavare.tee.sim.platform import SimPlatform
from inclavare.tee.sim.quote import QE_TARGET_INFO
from inclavare.tee.sim.sgx import EnclaveIdentity, TargetInfo
from inclavare.tee.sim.sigstruct import sign_enclave

from ..attestation.conftest import REPO_ROOT

SKELETON = REPO_ROOT / "pal" / "skeleton"
SHELL = shutil.which("sh") or "/bin/sh"
SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture(scope="session")
def skeletons() -> dict[int, str]:
    paths = {version: SKELETON / f"liberpal-skeleton-v{version}.so" for version in (1, 2, 3)}
    if not all(path.exists() for path in paths.values()):
        if shutil.which("gcc") is None:
            pytest.skip("the skeleton PALs are not built and gcc is missing")
        subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "pal"], check=True)
    return {version: str(path) for version, path in paths.items()}


@pytest.fixture(params=[1, 2, 3], ids=["v1", "v2", "v3"])
def pal(request: pytest.FixtureRequest, skeletons: dict[int, str]) -> Iterator[Pal]:
    loaded = load_pal(skeletons[request.param])
    loaded.init("", "info")
    yield loaded
    loaded.destroy()


@dataclass
class Pipes:
    stdin: tuple[int, int]
    stdout: tuple[int, int]
    stderr: tuple[int, int]

    @property
    def child_ends(self) -> tuple[int, int, int]:
        return (self.stdin[0], self.stdout[1], self.stderr[1])

    def close_child_ends(self) -> None:
        for fd in self.child_ends:
            os.close(fd)

    def read(self, which: tuple[int, int]) -> str:
        chunks = []
        while chunk := os.read(which[0], 4096):
            chunks.append(chunk)
        os.close(which[0])
        return b"".join(chunks).decode()


@pytest.fixture
def pipes() -> Pipes:
    return Pipes(os.pipe(), os.pipe(), os.pipe())


def test_each_skeleton_reports_its_version(skeletons: dict[int, str]) -> None:
    for version, path in skeletons.items():
        loaded: EnclaveRuntime = load_pal(path)
        assert loaded.api_version == version


def test_the_payload_gets_its_argv_env_and_stdio(pal: Pal, pipes: Pipes) -> None:
    script = (
        'printf "%s|" "$@"; echo "$GREETING"; read line; echo "in:$line"; echo oops >&2; exit 7'
    )
    argv = ["sh", "-c", script, "sh", "an argument with spaces", "", "*"]
    pid = pal.create_process(SHELL, argv, ["GREETING=hello world", "PATH=/bin"], pipes.child_ends)
    os.write(pipes.stdin[1], b"data\n")
    os.close(pipes.stdin[1])
    exit_code = pal.exec(pid)
    pipes.close_child_ends()
    assert pipes.read(pipes.stdout) == "an argument with spaces||*|hello world\nin:data\n"
    assert pipes.read(pipes.stderr) == "oops\n"
    assert exit_code == 7


def test_the_payload_starts_with_default_signal_dispositions(pal: Pal, pipes: Pipes) -> None:
    """Python ignores SIGPIPE; the payload must not inherit that."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    pid = pal.create_process(
        SHELL, ["sh", "-c", "grep SigIgn /proc/$$/status"], [], pipes.child_ends
    )
    os.close(pipes.stdin[1])
    assert pal.exec(pid) == 0
    pipes.close_child_ends()
    assert pipes.read(pipes.stdout).split() == ["SigIgn:", "0000000000000000"]


def test_kill_reaches_the_payload(pal: Pal) -> None:
    if pal.api_version == 1:
        # Version 1 runs the payload inside pal_exec; its pal_kill(sig, 0) signals it.
        pal.create_process(SLEEP, ["sleep", "30"], [], (-1, -1, -1))
        result: list[int] = []
        waiter = threading.Thread(target=lambda: result.append(pal.exec(0)))
        waiter.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                pal.kill(0, signal.SIGTERM)
                break
            except PalCallError as error:  # not started yet
                assert error.errno == errno.ESRCH and time.monotonic() < deadline
                time.sleep(0.02)
        waiter.join(10)
        assert result == [128 + signal.SIGTERM]
        return
    pid = pal.create_process(SLEEP, ["sleep", "30"], [], (-1, -1, -1))
    pal.kill(pid, signal.SIGTERM)
    assert pal.exec(pid) == 128 + signal.SIGTERM


def test_signals_reach_only_the_enclaves_processes(skeletons: dict[int, str]) -> None:
    loaded = load_pal(skeletons[2])
    loaded.init("", "info")
    with pytest.raises(PalCallError) as error:
        loaded.kill(os.getpid(), 0)
    assert str(error.value) == (
        f"PAL {skeletons[2]}: pal_kill failed with -3 (ESRCH: No such process)"
    )
    loaded.destroy()


def test_a_missing_program_is_enoent(pal: Pal) -> None:
    if pal.api_version == 1:
        pal.create_process("/no/such/program", ["x"], [], (-1, -1, -1))
        with pytest.raises(PalCallError, match=r"pal_exec failed with -2 \(ENOENT"):
            pal.exec(0)
        return
    with pytest.raises(
        PalCallError, match=r"pal_create_process failed with -2 \(ENOENT: No such file"
    ):
        pal.create_process("/no/such/program", ["x"], [], (-1, -1, -1))


def test_a_bad_stdio_descriptor_is_ebadf(skeletons: dict[int, str]) -> None:
    loaded = load_pal(skeletons[2])
    loaded.init("", "info")
    with pytest.raises(PalCallError, match=r"-9 \(EBADF"):
        loaded.create_process(SHELL, ["sh", "-c", "true"], [], (-1, 987, -1))
    loaded.destroy()


def test_nul_bytes_cannot_reach_the_pal(skeletons: dict[int, str]) -> None:
    loaded = load_pal(skeletons[2])
    with pytest.raises(PalError, match="an argument contains a NUL byte"):
        loaded.create_process(SHELL, ["sh", "a\0b"], [], (-1, -1, -1))


# --- local reports (version 3) -------------------------------------------------------------


@pytest.fixture(scope="module")
def launched(signing_key: bytes) -> EnclaveIdentity:
    runtime = RuntimeIdentity("pal:liberpal-skeleton-v3.so")
    digest = hashlib.sha256(b"payload").digest()
    manifest = Manifest.of(runtime, [TrustedFile("/bin/app", digest)])
    signature = sign_enclave(signing_key, manifest, isv_prod_id=9, isv_svn=1)
    return check_launch(signature, runtime, {"/bin/app": digest}).identity


def test_v3_reports_come_from_the_sim_platform(
    skeletons: dict[int, str], platform: SimPlatform, launched: EnclaveIdentity
) -> None:
    loaded = load_pal(skeletons[3])
    loaded.init("", "info", platform.launch_record(launched))
    nonce = bytes(range(32))
    raw = loaded.get_local_report(QE_TARGET_INFO.to_bytes(), nonce)
    report = platform.verify_report(raw, QE_TARGET_INFO)  # the MAC made in C verifies here
    assert report.identity == launched
    assert report.report_data == nonce + bytes(32)

    verifier = TargetInfo.of(launched)
    platform.verify_report(loaded.get_local_report(verifier.to_bytes()), verifier)

    # rune attest: the report becomes a quote that the verifier accepts.
    quote = platform.quote_report(raw)
    roots = parse_certificates(platform.root_ca_pem)
    from datetime import UTC, datetime

    verdict = verify_evidence(
        quote,
        VerificationInputs(
            at=datetime.now(UTC),
            trust=TrustStore.with_extra_roots((c.spki_sha256, c.common_name) for c in roots),
            allow_simulated=True,
        ),
    )
    assert verdict.verified and verdict.tee == "sim"
    assert verdict.claims["mrenclave"] == launched.mr_enclave.hex()
    loaded.destroy()


def test_v3_without_a_launched_enclave_has_no_report(skeletons: dict[int, str]) -> None:
    loaded = load_pal(skeletons[3])
    loaded.init("", "info")
    with pytest.raises(PalCallError, match=r"pal_get_local_report failed with -61 \(ENODATA"):
        loaded.get_local_report(QE_TARGET_INFO.to_bytes())
    loaded.destroy()


def test_v3_refuses_a_wrong_launch_record(skeletons: dict[int, str]) -> None:
    loaded = load_pal(skeletons[3])
    with pytest.raises(PalCallError, match=r"pal_init failed with -22 \(EINVAL"):
        loaded.init("", "info", b"\0" * 4192)


def test_earlier_versions_have_no_local_report(skeletons: dict[int, str]) -> None:
    for version in (1, 2):
        with pytest.raises(PalCallError, match=r"pal_get_local_report failed with -38 \(ENOSYS"):
            load_pal(skeletons[version]).get_local_report(QE_TARGET_INFO.to_bytes())


# --- failing, broken and crashing PALs -----------------------------------------------------


def test_errors_returned_by_the_pal_are_named(skeletons: dict[int, str]) -> None:
    loaded = load_pal(skeletons[2])
    with pytest.raises(PalCallError) as error:
        loaded.init("no-such-option", "info")
    assert str(error.value) == (
        f"PAL {skeletons[2]}: pal_init failed with -22 (EINVAL: Invalid argument)"
    )
    loaded.init("fail=exec", "info")
    pid = loaded.create_process(SHELL, ["sh", "-c", "exit 0"], [], (-1, -1, -1))
    with pytest.raises(
        PalCallError, match=r"pal_exec failed with -22 \(EINVAL: Invalid argument\)"
    ):
        loaded.exec(pid)
    loaded.init("", "info")
    assert loaded.exec(pid) == 0
    loaded.destroy()


BROKEN_SOURCES = {
    "version4": "int pal_get_version(void) { return 4; }\n",
    "version0": "int pal_get_version(void) { return 0; }\n",
    "incomplete": (
        "int pal_get_version(void) { return 2; }\n"
        "int pal_init(void *attr) { return 0; }\n"
        "int pal_exec(void *args) { return 0; }\n"
    ),
    "failing": (
        "#include <errno.h>\n"
        "int pal_init(void *attr) { return -EPERM; }\n"
        "int pal_exec(void *path, void *argv, void *stdio, int *code) { return -EINVAL; }\n"
        "int pal_destroy(void) { return -EBUSY; }\n"
    ),
}


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the broken PALs")
    directory = tmp_path_factory.mktemp("broken-pals")
    built = {}
    for name, source in BROKEN_SOURCES.items():
        (directory / f"{name}.c").write_text(source)
        target = directory / f"{name}.so"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(target), str(directory / f"{name}.c")],
            check=True,
        )
        built[name] = str(target)
    (directory / "text.so").write_text("this is not a shared object\n")
    built["text"] = str(directory / "text.so")
    return built


def test_version_4_is_refused(broken: dict[str, str]) -> None:
    with pytest.raises(PalLoadError) as error:
        load_pal(broken["version4"])
    assert str(error.value) == (
        f"the PAL {broken['version4']} implements PAL API version 4; rune supports versions 1 to 3"
    )
    with pytest.raises(PalLoadError, match="implements PAL API version 0"):
        load_pal(broken["version0"])


def test_missing_symbols_are_listed(broken: dict[str, str]) -> None:
    with pytest.raises(PalLoadError) as error:
        load_pal(broken["incomplete"])
    assert str(error.value) == (
        f"the PAL {broken['incomplete']} (API version 2) lacks pal_create_process, "
        "pal_kill, pal_destroy"
    )


def test_a_pal_without_get_version_is_version_1(broken: dict[str, str]) -> None:
    loaded = load_pal(broken["failing"])
    assert loaded.api_version == 1
    with pytest.raises(
        PalCallError, match=r"pal_init failed with -1 \(EPERM: Operation not permitted\)"
    ):
        loaded.init("", "info")
    loaded.create_process("/bin/true", ["true"], [], (-1, -1, -1))
    with pytest.raises(PalCallError, match=r"pal_exec failed with -22 \(EINVAL"):
        loaded.exec(0)
    with pytest.raises(PalCallError, match=r"pal_kill failed with -38 \(ENOSYS"):
        loaded.kill(0, signal.SIGTERM)
    with pytest.raises(PalCallError, match=r"pal_destroy failed with -16 \(EBUSY"):
        loaded.destroy()


def test_files_that_are_no_pal(broken: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(
        PalLoadError, match=r"cannot load the PAL .*text\.so: .*(invalid ELF header|file too short)"
    ):
        load_pal(broken["text"])
    with pytest.raises(PalLoadError, match="does not exist or is not a file"):
        load_pal(str(tmp_path / "absent.so"))
    with pytest.raises(PalLoadError, match="does not exist or is not a file"):
        load_pal(str(tmp_path))
    with pytest.raises(PalLoadError, match="must be absolute"):
        load_pal("liberpal-skeleton-v2.so")


@pytest.mark.parametrize("entry", ["init", "create_process", "exec"])
def test_a_crashing_pal_takes_only_its_process(skeletons: dict[int, str], entry: str) -> None:
    """Run in a child process: the PAL aborts it, and the reason is on its standard error."""
    program = (
        "import sys\n"
        "from inclavare.enclave.pal import load_pal\n"
        f"pal = load_pal({skeletons[2]!r})\n"
        f"pal.init('crash={entry}', 'info')\n"
        "pid = pal.create_process('/bin/true', ['true'], [], (-1, -1, -1))\n"
        "pal.exec(pid)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
        timeout=60,
    )
    assert result.returncode == -signal.SIGABRT
    assert f"skeleton: crashing in {entry}, as asked" in result.stderr
