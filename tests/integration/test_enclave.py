"""Enclave containers through rune: builtin:native, builtin:wasm and the skeleton PAL (API
versions 1, 2 and 3) on the simulated TEE, `rune exec` and `rune attest` through the
init-runelet's agent, and every bad input of the enclave configuration, each with its
message and no leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from inclavare.cli.enclave_sign import main as enclave_sign
from inclavare.cli.shelter import main as shelter
from tests.integration.conftest import Bundle, LeakCheck, Rune

REPO_ROOT = Path(__file__).resolve().parents[2]
SKELETON = REPO_ROOT / "pal" / "skeleton"
WASM_SOURCES = Path(__file__).resolve().parent / "wasm"


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulated platform for the session (its identity is made on first use)."""
    return tmp_path_factory.mktemp("sim") / "platform"


@pytest.fixture(autouse=True)
def _sim_platform(sim_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(sim_dir))


@pytest.fixture(scope="session")
def skeletons() -> dict[int, str]:
    paths = {version: SKELETON / f"liberpal-skeleton-v{version}.so" for version in (1, 2, 3)}
    if not all(path.exists() for path in paths.values()):
        subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "pal"], check=True)
    return {version: str(path) for version, path in paths.items()}


@pytest.fixture(scope="session")
def wasm_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    wasmtime = pytest.importorskip("wasmtime")
    return {
        source.stem: wasmtime.wat2wasm(source.read_text())
        for source in sorted(WASM_SOURCES.glob("*.wat"))
    }


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static program that prints whether it is dumpable (prctl PR_GET_DUMPABLE)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the probe")
    directory = tmp_path_factory.mktemp("probe")
    source = directory / "probe.c"
    source.write_text(
        "#include <stdio.h>\n#include <sys/prctl.h>\n"
        'int main(void) { printf("dumpable=%d\\n", prctl(PR_GET_DUMPABLE)); return 0; }\n'
    )
    program = directory / "probe"
    result = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(program), str(source)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip("no static C library to build the probe")
    return program


def enclave(bundle: Bundle, runtime: str, args: str = "", kind: str = "sim") -> Bundle:
    env = bundle.config["process"]["env"]
    env += [f"ENCLAVE_TYPE={kind}", f"ENCLAVE_RUNTIME_PATH={runtime}"]
    if args:
        env.append(f"ENCLAVE_RUNTIME_ARGS={args}")
    return bundle


def sign(bundle: Bundle, key: Path, *trusted: str) -> None:
    bundle.write()
    if not key.exists():
        assert enclave_sign(["genkey", str(key)]) == 0
    options = [f"--trusted={path}" for path in trusted]
    assert enclave_sign(["sign", str(bundle.path), "--key", str(key), *options]) == 0


def create_fails(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> str:
    """Create must fail; return its error output, after checking that nothing is left."""
    bundle.write()
    container_id = leaks.new_id()
    result = rune.detached(
        "create", "-b", str(bundle.path), container_id, output=tmp_path / "out", check=False
    )
    assert result.returncode != 0
    assert not (rune.root / container_id).exists()
    leaks.assert_clean(container_id)
    return result.stderr


def error_line(stderr: str) -> str:
    """rune's error, from its last log line."""
    line = [line for line in stderr.splitlines() if "level=error" in line][-1]
    message: str = line.split("msg=", 1)[1]
    return json.loads(message) if message.startswith('"') else message


def start_detached(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> str:
    bundle.write()
    container_id = leaks.new_id()
    rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    return container_id


# --- builtin:native -------------------------------------------------------------------------------


def test_native_runs_the_program_without_the_enclave_settings(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    enclave(bundle, "builtin:native").set_args("sh", "-c", 'echo "[$1]"; env; exit 3', "sh", "a b")
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[a b]"
    assert not [line for line in lines if line.startswith("ENCLAVE_")]
    assert "simulated enclave (sim TEE, no protection against the host's root)" in result.stderr
    leaks.assert_clean(container_id)


def test_native_process_is_hardened(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, probe: Path
) -> None:
    shutil.copy2(probe, bundle.rootfs / "bin" / "probe")
    enclave(bundle, "builtin:native").set_args("sleep", "30")
    sign(bundle, tmp_path / "key.pem", "/bin/probe", "/bin/busybox")
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    assert rune("exec", container_id, "probe").stdout == "dumpable=0\n"
    status = rune("exec", container_id, "cat", "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    limits = rune("exec", container_id, "cat", "/proc/self/limits").stdout
    assert [line.split()[4:6] for line in limits.splitlines() if "core" in line] == [["0", "0"]]


def test_native_program_runs_as_another_user_not_dumpable(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    enclave(bundle, "builtin:native").set_args("sleep", "30")
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    init = rune.state(container_id)["pid"]

    def children() -> list[str]:  # of every thread: the init-runelet forks from its threads
        found = []
        for task in Path(f"/proc/{init}/task").iterdir():
            try:
                found += (task / "children").read_text().split()
            except OSError:
                pass  # a thread that has just ended
        return found

    deadline = time.monotonic() + 5
    while not children() and time.monotonic() < deadline:
        time.sleep(0.02)
    (sleeper,) = children()
    status = Path(f"/proc/{sleeper}/status").read_text()
    assert "Uid:\t1000\t1000\t1000\t1000" in status
    # the /proc files of a non-dumpable process belong to root, not to its user
    assert os.stat(f"/proc/{sleeper}/status").st_uid == 0


def test_signed_native_enclave_is_launched_with_its_signature(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enclave(bundle, "builtin:native").set_args("sleep", "30")
    sign(bundle, tmp_path / "key.pem")
    capsys.readouterr()
    assert enclave_sign(["measure", str(bundle.path), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    report = json.loads(rune("attest", container_id).stdout)
    assert report["mrenclave"] == measured["mrenclave"]
    assert report["debug"] is False
    assert report["simulated"] is True


def test_tampered_trusted_file_is_refused_at_create(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    enclave(bundle, "builtin:native").set_args("sh", "-c", "true")
    sign(bundle, tmp_path / "key.pem", "/etc/passwd")
    with open(bundle.rootfs / "etc" / "passwd", "a") as passwd:
        passwd.write("intruder:x:0:0::/:/bin/sh\n")
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message.startswith(
        "enclave launch refused: trusted file /etc/passwd differs from the signed measurement"
    )


def test_file_tampered_between_create_and_start_is_refused_at_start(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    enclave(bundle, "builtin:native").set_args("sh", "-c", "true")
    sign(bundle, tmp_path / "key.pem", "/etc/passwd")
    container_id = leaks.new_id()
    rune.detached("create", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    (bundle.rootfs / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    result = rune("start", container_id, check=False)
    assert result.returncode == 1
    assert "trusted file /etc/passwd differs from the signed measurement" in result.stderr
    rune("delete", "--force", container_id)
    leaks.assert_clean(container_id)


def test_bad_signature_is_refused(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    enclave(bundle, "builtin:native").set_args("true")
    sign(bundle, tmp_path / "key.pem")
    signature = bundle.rootfs / ".inclavare" / "enclave.sig"
    raw = bytearray(signature.read_bytes())
    raw[20 + 516] ^= 1  # a bit of the RSA signature
    signature.write_bytes(bytes(raw))
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message.startswith("enclave launch refused:")
    assert "signature" in message


def test_exec_of_an_untrusted_program_is_refused(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, probe: Path
) -> None:
    shutil.copy2(probe, bundle.rootfs / "bin" / "probe")
    container_id = start_detached(
        rune, enclave(bundle, "builtin:native").set_args("sleep", "30"), leaks, tmp_path
    )
    result = rune("exec", container_id, "probe", check=False)
    assert result.returncode == 1
    assert "/bin/probe is not among the enclave's trusted files" in result.stderr
    assert rune.state(container_id)["status"] == "running"  # the enclave goes on


# --- rune exec and kill ---------------------------------------------------------------------------


RUNTIMES = ["builtin:native", "skeleton-v1", "skeleton-v2", "skeleton-v3"]


def runtime_path(name: str, skeletons: dict[int, str]) -> str:
    return skeletons[int(name[-1])] if name.startswith("skeleton") else name


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_arguments_with_spaces_environment_and_exit_codes(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    runtime: str,
) -> None:
    enclave(bundle, runtime_path(runtime, skeletons)).set_args("sleep", "30")
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    result = rune(
        "exec",
        "-e",
        "EXTRA=two words",
        container_id,
        "sh",
        "-c",
        'printf "%s|" "$@"; echo "$EXTRA"; exit 7',
        "sh",
        "a b",
        " c ",
        "",
        check=False,
    )
    assert (result.returncode, result.stdout) == (7, "a b| c ||two words\n")
    assert rune("exec", container_id, "true").returncode == 0
    second = rune("exec", container_id, "sh", "-c", "exit 9", check=False)
    assert second.returncode == 9


@pytest.mark.parametrize("runtime", ["builtin:native", "skeleton-v2", "skeleton-v3"])
def test_exec_signals_reach_the_exec_process(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    runtime: str,
) -> None:
    enclave(bundle, runtime_path(runtime, skeletons)).set_args("sleep", "30")
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    process = subprocess.Popen(
        rune.command("exec", container_id, "sleep", "20"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 128 + signal.SIGTERM
    assert rune.state(container_id)["status"] == "running"  # the entrypoint was not signalled
    rune("kill", container_id, "TERM")
    rune.wait_for_status(container_id, "stopped")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_signal_to_rune_run_reaches_the_entrypoint(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    runtime: str,
) -> None:
    enclave(bundle, runtime_path(runtime, skeletons)).set_args("sleep", "30")
    bundle.write()
    container_id = leaks.new_id()
    process = subprocess.Popen(
        rune.command("run", "-b", str(bundle.path), container_id),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (rune.root / container_id / "agent.sock").exists():
        assert time.monotonic() < deadline, "the container was never created"
        time.sleep(0.02)
    rune.wait_for_status(container_id, "running")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 128 + signal.SIGINT
    leaks.assert_clean(container_id)


# --- the skeleton PAL -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_skeleton_runs_the_entrypoint_with_argv_env_and_exit_code(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, skeletons: dict[int, str], version: int
) -> None:
    enclave(bundle, skeletons[version]).set_args("sh", "-c", 'echo "$1|$FOO"; exit 4', "sh", "x y")
    bundle.config["process"]["env"].append("FOO=bar baz")
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert (result.returncode, result.stdout) == (4, "x y|bar baz\n"), result.stderr
    leaks.assert_clean(container_id)


def test_missing_pal(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> None:
    enclave(bundle, str(tmp_path / "liberpal-missing.so"))
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message == (
        f"the enclave runtime (PAL) {tmp_path}/liberpal-missing.so does not exist or is not a file"
    )


def test_broken_pal(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> None:
    pal = tmp_path / "liberpal-broken.so"
    pal.write_text("not a shared object\n")
    enclave(bundle, str(pal))
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message.startswith(f"cannot load the PAL {pal}: ")


def test_pal_of_version_4_is_refused(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build a PAL")
    source = tmp_path / "v4.c"
    source.write_text("int pal_get_version(void) { return 4; }\n")
    pal = tmp_path / "liberpal-v4.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(pal), str(source)], check=True)
    enclave(bundle, str(pal))
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message == (f"the PAL {pal} implements PAL API version 4; rune supports versions 1 to 3")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_pal_init_error_fails_create(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    version: int,
) -> None:
    enclave(bundle, skeletons[version], args="fail=init")
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message == (
        f"PAL {skeletons[version]}: pal_init failed with -22 (EINVAL: Invalid argument)"
    )


@pytest.mark.parametrize("version", [1, 3])
def test_pal_crash_in_init_fails_create_and_leaves_nothing(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    version: int,
) -> None:
    enclave(bundle, skeletons[version], args="crash=init")
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    # abort() ends as SIGSEGV in a pid namespace's init, which cannot be sent SIGABRT itself
    assert message.startswith(
        f"enclave runtime {skeletons[version]} crashed in pal_init: "
        "the container init was killed by SIG"
    )


def test_pal_create_process_error_fails_start(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, skeletons: dict[int, str]
) -> None:
    enclave(bundle, skeletons[2], args="fail=create_process").set_args("true")
    bundle.write()
    container_id = leaks.new_id()
    rune.detached("create", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    result = rune("start", container_id, check=False)
    assert result.returncode == 1
    assert error_line(result.stderr) == (
        f"start container {container_id}: PAL {skeletons[2]}: pal_create_process failed with "
        "-22 (EINVAL: Invalid argument)"
    )
    rune.wait_for_status(container_id, "stopped")
    rune("delete", container_id)
    leaks.assert_clean(container_id)


def test_pal_exec_error_ends_the_container_with_a_message(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, skeletons: dict[int, str]
) -> None:
    enclave(bundle, skeletons[3], args="fail=exec").set_args("true")
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "pal_exec failed with -22 (EINVAL: Invalid argument)" in result.stderr
    leaks.assert_clean(container_id)


# --- rune attest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["builtin:native", "builtin:wasm", "skeleton-v3"])
def test_attest_quote_with_a_nonce_verified_by_shelter(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    wasm_modules: dict[str, bytes],
    sim_dir: Path,
    capsys: pytest.CaptureFixture[str],
    runtime: str,
) -> None:
    if runtime == "builtin:wasm":
        (bundle.rootfs / "app").mkdir()
        (bundle.rootfs / "app" / "echo.wasm").write_bytes(wasm_modules["echo"])
        bundle.set_args("/app/echo.wasm")
    else:
        bundle.set_args("sleep", "30")
    enclave(bundle, runtime_path(runtime, skeletons))
    bundle.write()
    container_id = leaks.new_id()
    # created, not started: the enclave exists and can be attested already
    rune.detached("create", "-b", str(bundle.path), container_id, output=tmp_path / "out")
    nonce = os.urandom(32).hex()
    quote = tmp_path / "quote.dat"
    attested = rune(
        "attest",
        "--isRA",
        "--quote-type",
        "ecdsa",
        "--nonce",
        nonce,
        "--output",
        str(quote),
        container_id,
    )
    summary = json.loads(attested.stdout)
    assert summary["simulated"] is True
    assert summary["report_data"].startswith(nonce)
    capsys.readouterr()
    code = shelter(
        ["verify", "--roots", str(sim_dir / "root-ca.pem"), "--allow-sim", "--json", str(quote)]
    )
    verdict = json.loads(capsys.readouterr().out)
    assert code == 0, verdict
    assert verdict["verified"] is True
    assert verdict["tee"] == "sim"
    assert verdict["claims"]["report_data"] == nonce + "00" * 32
    assert verdict["claims"]["mrenclave"] == summary["mrenclave"]
    # without --allow-sim the same quote is refused
    assert shelter(["verify", "--roots", str(sim_dir / "root-ca.pem"), str(quote)]) != 0


def test_attest_report_file_in_the_rootfs(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    enclave(bundle, "builtin:native").set_args("sleep", "30")
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    rune("attest", "--reportFile", "/tmp/report.bin", "--nonce", "c0ffee", container_id)
    report = (bundle.rootfs / "tmp" / "report.bin").read_bytes()
    assert len(report) == 432
    assert report[320:323] == bytes.fromhex("c0ffee")
    assert report[384:400] == b"SIMULATED-REPORT"


@pytest.mark.parametrize("version", [1, 2])
def test_attest_needs_a_pal_of_version_3(
    rune: Rune,
    bundle: Bundle,
    leaks: LeakCheck,
    tmp_path: Path,
    skeletons: dict[int, str],
    version: int,
) -> None:
    enclave(bundle, skeletons[version]).set_args("sleep", "30")
    container_id = start_detached(rune, bundle, leaks, tmp_path)
    result = rune("attest", container_id, check=False)
    assert result.returncode == 1
    assert error_line(result.stderr) == (
        f"PAL {skeletons[version]}: pal_get_local_report failed with -38 "
        "(ENOSYS: Function not implemented)"
    )


def test_attest_of_an_ordinary_container_is_refused(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    container_id = start_detached(rune, bundle.set_args("sleep", "30"), leaks, tmp_path)
    result = rune("attest", container_id, check=False)
    assert error_line(result.stderr) == f"container {container_id} is not an enclave container"


# --- builtin:wasm ---------------------------------------------------------------------------------


@pytest.fixture
def wasm_bundle(bundle: Bundle, wasm_modules: dict[str, bytes]) -> Bundle:
    (bundle.rootfs / "app").mkdir()
    for name, module in wasm_modules.items():
        (bundle.rootfs / "app" / f"{name}.wasm").write_bytes(module)
    return enclave(bundle, "builtin:wasm")


def test_wasm_module_gets_argv_env_and_its_exit_code(
    rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck
) -> None:
    wasm_bundle.set_args("/app/echo.wasm", "a b", "c")
    wasm_bundle.config["process"]["env"].append("GREETING=hi there")
    wasm_bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(wasm_bundle.path), container_id, check=False)
    assert result.returncode == 2, result.stderr
    arguments, environment = result.stdout.split("--\n")
    assert arguments == "a b\nc\n"
    assert "GREETING=hi there" in environment.splitlines()
    assert not [line for line in environment.splitlines() if line.startswith("ENCLAVE_")]
    leaks.assert_clean(container_id)


def test_wasm_module_reads_a_preopened_directory(
    rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck
) -> None:
    (wasm_bundle.rootfs / "etc" / "message").write_text("from the rootfs\n")
    wasm_bundle.set_args("/app/cat.wasm", "etc/message").write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(wasm_bundle.path), container_id, check=False)
    assert (result.returncode, result.stdout) == (0, "from the rootfs\n"), result.stderr


def test_wasm_preopened_directories_from_runtime_args(
    rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck
) -> None:
    (wasm_bundle.rootfs / "etc" / "message").write_text("only here\n")
    wasm_bundle.config["process"]["env"].append("ENCLAVE_RUNTIME_ARGS=dir=/etc")
    wasm_bundle.set_args("/app/cat.wasm", "message").write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(wasm_bundle.path), container_id, check=False)
    assert (result.returncode, result.stdout) == (0, "only here\n"), result.stderr


def test_wasm_exec_with_arguments(
    rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    wasm_bundle.set_args("/app/sleep.wasm")
    sign(wasm_bundle, tmp_path / "key.pem", "/app")  # the modules exec runs must be trusted
    container_id = start_detached(rune, wasm_bundle, leaks, tmp_path)
    result = rune("exec", container_id, "/app/echo.wasm", "x  y", "z", check=False)
    assert result.returncode == 2
    assert result.stdout.startswith("x  y\nz\n--\n")


def test_wasm_module_that_traps(rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck) -> None:
    wasm_bundle.set_args("/app/trap.wasm").write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(wasm_bundle.path), container_id, check=False)
    assert result.returncode == 134
    assert (
        "builtin:wasm: /app/trap.wasm trapped: wasm trap: wasm `unreachable` instruction executed"
        in result.stderr
    )
    leaks.assert_clean(container_id)


def test_invalid_wasm_module_fails_start(
    rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    (wasm_bundle.rootfs / "app" / "bad.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    wasm_bundle.set_args("/app/bad.wasm").write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(wasm_bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "builtin:wasm: /app/bad.wasm is not a valid WebAssembly module" in result.stderr
    leaks.assert_clean(container_id)


# --- configuration --------------------------------------------------------------------------------


def test_unknown_enclave_type(rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path) -> None:
    enclave(bundle, "builtin:native", kind="tdx")
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message == "unknown enclave type 'tdx' (ENCLAVE_TYPE); known types: sim, intelSgx"


def test_intel_sgx_without_a_device(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path, skeletons: dict[int, str]
) -> None:
    if any(os.path.exists(path) for path in ("/dev/sgx_enclave", "/dev/sgx/enclave", "/dev/isgx")):
        pytest.skip("this host has an SGX device")
    enclave(bundle, skeletons[3], kind="intelSgx")
    message = error_line(create_fails(rune, bundle, leaks, tmp_path))
    assert message.startswith("enclave type intelSgx needs an SGX device")


def test_enclave_from_annotations(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["annotations"] = {"enclave.type": "sim", "enclave.runtime.path": "builtin:native"}
    bundle.set_args("sh", "-c", "exit 5").write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 5
    assert "runtime builtin:native@1" in result.stderr


def test_spec_enclave_template(rune: Rune, tmp_path: Path) -> None:
    rune("spec", "--enclave", "--enclave-runtime", "builtin:wasm", "-b", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    env = config["process"]["env"]
    assert "ENCLAVE_TYPE=sim" in env
    assert "ENCLAVE_RUNTIME_PATH=builtin:wasm" in env


def test_wasm_hello_world(rune: Rune, wasm_bundle: Bundle, leaks: LeakCheck) -> None:
    wasm_bundle.set_args("/app/hello.wasm").write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(wasm_bundle.path), container_id)
    assert result.stdout == "hello from wasm\n"
