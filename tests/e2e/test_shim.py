"""containerd 1.6 (Debian's package) driving containerd-shim-rune-v2: `ctr run --runtime
io.containerd.rune.v2`, the shim found on containerd's PATH beside rune."""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemons import Containerd, processes_mentioning, restart_containerd, start_containerd

pytestmark = pytest.mark.daemon

RUNTIME = "io.containerd.rune.v2"
SHIM = "containerd-shim-rune-v2"
# what a deployment adds to containerd's config for Kubernetes (the CRI plugin is disabled in
# these private daemons, `ctr --runtime` needs only the shim on PATH)
RUNTIME_CONFIG = (
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]\n'
    '  runtime_type = "io.containerd.rune.v2"\n'
)


@pytest.fixture(scope="module")
def shim_containerd(
    tmp_path_factory: pytest.TempPathFactory, image_archive: tuple[Path, str], rune_program: str
) -> Iterator[Containerd]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed: run `make install`")
    launchers = Path(rune_program).parent
    if not os.access(launchers / SHIM, os.X_OK):
        pytest.skip(f"{SHIM} is not installed beside {rune_program}: run `make install`")
    directory = tmp_path_factory.mktemp("containerd-shim")
    # the carrier's config.toml (its conversion cache) in the test's directory too
    (directory / "inclavare.toml").write_text(
        f'[enclave_runtime.cache]\ndirectory = "{directory}/carrier-cache"\n'
    )
    daemon = start_containerd(
        directory,
        RUNTIME_CONFIG,
        path=[str(launchers)],
        # rune keeps the sim TEE's platform of enclave containers in the test's directory
        variables={
            "INCLAVARE_SIM_DIR": f"{directory}/sim",
            "INCLAVARE_CONFIG": f"{directory}/inclavare.toml",
        },
    )
    try:
        daemon.ctr("images", "import", str(image_archive[0]))
        yield daemon
        daemon.remove_everything()
    finally:
        daemon.stop()


@pytest.fixture(autouse=True)
def _clean_after(shim_containerd: Containerd) -> Iterator[None]:
    """A failing test leaves no container behind for the next one to trip over."""
    yield
    shim_containerd.remove_everything()


def bundle_of(containerd: Containerd, container: str) -> Path:
    return (
        containerd.directory
        / "state"
        / "io.containerd.runtime.v2.task"
        / containerd.namespace
        / container
    )


def shim_socket(containerd: Containerd, container: str) -> str:
    address = (bundle_of(containerd, container) / "address").read_text()
    assert address.startswith("unix://")
    return address.removeprefix("unix://")


def shim_pids(containerd: Containerd) -> list[int]:
    return [
        pid
        for pid in processes_mentioning(str(containerd.socket))
        if SHIM.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def wait_for_status(containerd: Containerd, container: str, status: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]:
            words = line.split()
            if words[0] == container and words[2] == status:
                return
        assert time.monotonic() < deadline, f"{container} never became {status}"
        time.sleep(0.05)


def remove(containerd: Containerd, container: str) -> None:
    containerd.ctr("tasks", "kill", "--signal", "KILL", container, check=False)
    deadline = time.monotonic() + 15
    while containerd.ctr("tasks", "delete", container, check=False).returncode != 0:
        if container not in containerd.ctr("tasks", "ls", "-q").stdout.split():
            break
        assert time.monotonic() < deadline, f"task {container} was never deleted"
        time.sleep(0.1)
    containerd.ctr("containers", "delete", container)


def assert_nothing_left(containerd: Containerd, container: str) -> None:
    """No shim for the container, no mount of its bundle, no socket, no rune state."""
    deadline = time.monotonic() + 10
    while shim_pids(containerd):
        assert time.monotonic() < deadline, f"shims left: {shim_pids(containerd)}"
        time.sleep(0.05)
    with open("/proc/self/mountinfo") as mountinfo:
        assert not [line for line in mountinfo if f"/{container}/rootfs" in line]
    assert not Path(f"/run/containerd/rune/{containerd.namespace}/{container}").exists()
    assert not bundle_of(containerd, container).exists()


def test_run_returns_output_and_exit_code(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    result = shim_containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image_archive[1],
        "once",
        "sh",
        "-c",
        "echo to stdout; echo to stderr >&2; exit 3",
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "to stdout\n"
    assert "to stderr\n" in result.stderr
    assert "once" not in shim_containerd.ctr("containers", "ls", "-q").stdout.split()
    assert_nothing_left(shim_containerd, "once")


def test_stdin_reaches_the_process(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    result = subprocess.run(
        [
            "ctr",
            "--address",
            str(shim_containerd.socket),
            "--namespace",
            shim_containerd.namespace,
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            image_archive[1],
            "reader",
            "sh",
            "-c",
            "read line; echo got $line; cat | wc -l",
        ],
        input="first\nsecond\nthird\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["got", "first", "2"]


def test_exec_ps_pause_resume_metrics_kill_delete(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    ctr = shim_containerd.ctr
    ctr("run", "-d", "--runtime", RUNTIME, image_archive[1], "long", "sleep", "300")
    wait_for_status(shim_containerd, "long", "RUNNING")
    executed = ctr(
        "tasks", "exec", "--exec-id", "probe", "long", "sh", "-c", "echo in; exit 4", check=False
    )
    assert (executed.returncode, executed.stdout) == (4, "in\n")
    listed = ctr("tasks", "ps", "long").stdout.splitlines()
    assert listed[0].split() == ["PID", "INFO"] and len(listed) == 2
    metrics = ctr("tasks", "metrics", "long").stdout
    assert "pids.current" in metrics and "memory.usage_in_bytes" in metrics
    ctr("tasks", "pause", "long")
    wait_for_status(shim_containerd, "long", "PAUSED")
    ctr("tasks", "resume", "long")
    wait_for_status(shim_containerd, "long", "RUNNING")
    ctr("tasks", "kill", "--signal", "KILL", "long")
    wait_for_status(shim_containerd, "long", "STOPPED")
    ctr("tasks", "delete", "long")
    ctr("containers", "delete", "long")
    assert_nothing_left(shim_containerd, "long")


def _ctr_on_a_terminal(containerd: Containerd, *args: str) -> tuple[int, bytes]:
    """ctr -t needs a terminal of its own: a pty whose master side is read to the end."""
    master, slave = pty.openpty()
    command = ["ctr", "--address", str(containerd.socket), "--namespace", containerd.namespace]
    process = subprocess.Popen([*command, *args], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: ctr, the last holder of the terminal, is gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        code = process.wait(timeout=60)
    return code, output


def test_terminals(shim_containerd: Containerd, image_archive: tuple[Path, str]) -> None:
    image = image_archive[1]
    code, output = _ctr_on_a_terminal(
        shim_containerd,
        "run",
        "--rm",
        "-t",
        "--runtime",
        RUNTIME,
        image,
        "tty",
        "sh",
        "-c",
        "tty; exit 5",
    )
    assert code == 5, output
    assert b"/dev/pts/0" in output
    assert_nothing_left(shim_containerd, "tty")
    shim_containerd.ctr("run", "-d", "--runtime", RUNTIME, image, "plain", "sleep", "300")
    wait_for_status(shim_containerd, "plain", "RUNNING")
    code, output = _ctr_on_a_terminal(
        shim_containerd,
        "tasks",
        "exec",
        "-t",
        "--exec-id",
        "term",
        "plain",
        "sh",
        "-c",
        "tty; exit 6",
    )
    assert code == 6, output
    assert b"/dev/pts/" in output
    remove(shim_containerd, "plain")
    assert_nothing_left(shim_containerd, "plain")


def test_the_shim_survives_a_containerd_restart(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    ctr = shim_containerd.ctr
    ctr("run", "-d", "--runtime", RUNTIME, image_archive[1], "survivor", "sleep", "300")
    wait_for_status(shim_containerd, "survivor", "RUNNING")
    shims = shim_pids(shim_containerd)
    restart_containerd(shim_containerd)
    assert shim_pids(shim_containerd) == shims
    wait_for_status(shim_containerd, "survivor", "RUNNING")
    executed = ctr("tasks", "exec", "--exec-id", "after", "survivor", "echo", "still here")
    assert executed.stdout == "still here\n"
    ctr("tasks", "kill", "--signal", "KILL", "survivor")
    wait_for_status(shim_containerd, "survivor", "STOPPED")  # the exit event reached it
    ctr("tasks", "delete", "survivor")
    ctr("containers", "delete", "survivor")
    assert_nothing_left(shim_containerd, "survivor")


def _frames_answer(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_malformed_ttrpc_frames_do_not_hurt_the_shim(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    from inclavare.shim import ttrpc

    ctr = shim_containerd.ctr
    ctr("run", "-d", "--runtime", RUNTIME, image_archive[1], "target", "sleep", "300")
    wait_for_status(shim_containerd, "target", "RUNNING")
    path = shim_socket(shim_containerd, "target")
    # a frame with an even stream id: the connection is closed without an answer
    assert _frames_answer(path, ttrpc.encode_frame(2, ttrpc.TYPE_REQUEST, b"")) == b""
    # a truncated header, then a truncated frame
    assert _frames_answer(path, b"\x00\x00\x01") == b""
    assert _frames_answer(path, struct.pack(">IIBB", 100, 1, 1, 0) + b"short") == b""
    # a request that is not protobuf: INVALID_ARGUMENT on that stream
    answer = _frames_answer(path, ttrpc.encode_frame(1, ttrpc.TYPE_REQUEST, b"\x0a\x09abc"))
    ((frame),) = ttrpc.FrameDecoder().feed(answer)
    assert isinstance(frame, ttrpc.Frame)
    assert ttrpc.decode_response(frame.payload).status.code == ttrpc.INVALID_ARGUMENT
    # a Task message that is not protobuf, and a method the shim does not have
    from inclavare.shim import messages

    escape = messages.ExecProcessRequest(id="target", exec_id="../../escape")
    for method, payload, code in (
        ("State", b"\xff\xff", ttrpc.INVALID_ARGUMENT),
        ("Checkpoint", b"", ttrpc.UNIMPLEMENTED),
        ("Exec", escape.SerializeToString(), ttrpc.INVALID_ARGUMENT),
    ):
        request = ttrpc.encode_request(ttrpc.Request("containerd.task.v2.Task", method, payload))
        answer = _frames_answer(path, ttrpc.encode_frame(1, ttrpc.TYPE_REQUEST, request))
        ((frame),) = ttrpc.FrameDecoder().feed(answer)
        assert isinstance(frame, ttrpc.Frame)
        assert ttrpc.decode_response(frame.payload).status.code == code, method
    # an oversized frame is refused with RESOURCE_EXHAUSTED
    too_big = ttrpc.MAX_MESSAGE_LENGTH + 1
    answer = _frames_answer(path, struct.pack(">IIBB", too_big, 1, 1, 0) + b"\0" * too_big)
    ((frame),) = ttrpc.FrameDecoder().feed(answer)
    assert isinstance(frame, ttrpc.Frame)
    assert ttrpc.decode_response(frame.payload).status.code == ttrpc.RESOURCE_EXHAUSTED
    # the shim still serves containerd
    assert ctr("tasks", "exec", "--exec-id", "ok", "target", "echo", "fine").stdout == "fine\n"
    remove(shim_containerd, "target")
    assert_nothing_left(shim_containerd, "target")


def test_a_rune_failure_reaches_ctr_and_leaves_nothing(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    result = shim_containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image_archive[1],
        "broken",
        "no-such-program",
        check=False,
    )
    assert result.returncode != 0
    assert "OCI runtime create failed" in result.stderr
    assert "executable file not found" in result.stderr
    shim_containerd.ctr("containers", "delete", "broken", check=False)
    assert_nothing_left(shim_containerd, "broken")


def test_a_shim_killed_is_cleaned_up_by_its_delete_action(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    """containerd runs `containerd-shim-rune-v2 delete` when the shim dies: rune's
    container is removed, the rootfs unmounted, the dead shim's socket removed."""
    ctr = shim_containerd.ctr
    ctr("run", "-d", "--runtime", RUNTIME, image_archive[1], "orphan", "sleep", "300")
    wait_for_status(shim_containerd, "orphan", "RUNNING")
    socket_path = Path(shim_socket(shim_containerd, "orphan"))
    (shim,) = shim_pids(shim_containerd)
    task_pid = int(ctr("tasks", "ls").stdout.splitlines()[1].split()[1])
    os.kill(shim, 9)
    deadline = time.monotonic() + 20
    while "orphan" in ctr("tasks", "ls", "-q").stdout.split():
        assert time.monotonic() < deadline, "containerd kept the dead shim's task"
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while (
        Path(f"/proc/{task_pid}").exists()
        and b"Z" not in Path(f"/proc/{task_pid}/stat").read_bytes().split(b")")[-1][:3]
    ):
        assert time.monotonic() < deadline, "the container's process outlived its shim"
        time.sleep(0.1)
    ctr("containers", "delete", "orphan")
    assert_nothing_left(shim_containerd, "orphan")
    assert not socket_path.exists()


def test_one_shim_serves_the_containers_of_a_pod(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    """Containers with the same CRI sandbox id share one shim, which stays until the last
    of them is deleted."""
    ctr = shim_containerd.ctr
    pod = "--annotation=io.kubernetes.cri.sandbox-id=pod-1"
    for name in ("pod-a", "pod-b"):
        ctr("run", "-d", "--runtime", RUNTIME, pod, image_archive[1], name, "sleep", "300")
        wait_for_status(shim_containerd, name, "RUNNING")
    assert shim_socket(shim_containerd, "pod-a") == shim_socket(shim_containerd, "pod-b")
    (shim,) = shim_pids(shim_containerd)
    remove(shim_containerd, "pod-a")
    assert shim_pids(shim_containerd) == [shim]
    assert ctr("tasks", "exec", "--exec-id", "x", "pod-b", "echo", "alive").stdout == "alive\n"
    remove(shim_containerd, "pod-b")
    assert_nothing_left(shim_containerd, "pod-b")


def test_an_out_of_memory_kill_is_published(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    if not Path("/sys/fs/cgroup/memory/memory.oom_control").exists():
        pytest.skip("the memory controller is not on cgroup v1 here")
    command = ["ctr", "--address", str(shim_containerd.socket), "events"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as events:
        try:
            time.sleep(0.3)  # subscribed
            hog = 'x=xxxxxxxxxxxxxxxx; while true; do x="$x$x"; done'
            result = shim_containerd.ctr(
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                "--memory-limit",
                str(16 * 1024 * 1024),
                image_archive[1],
                "hog",
                "sh",
                "-c",
                hog,
                check=False,
            )
            assert result.returncode == 137, result.stderr
            time.sleep(0.5)
        finally:
            events.terminate()
        seen = events.communicate(timeout=10)[0]
    oom = [line for line in seen.splitlines() if "/tasks/oom" in line]
    assert oom and '"container_id":"hog"' in oom[0], seen
    assert_nothing_left(shim_containerd, "hog")


def test_binary_name_from_the_runtime_options_is_honoured(
    shim_containerd: Containerd,
    image_archive: tuple[Path, str],
    rune_program: str,
    tmp_path: Path,
) -> None:
    """containerd passes runtimeoptions.v1.Options{ConfigPath} to a shim that is not runc's
    (`ctr --runtime-config-path`, or the CRI plugin's options table); its BinaryName is the
    runtime program the shim runs."""
    marker = tmp_path / "ran"
    wrapper = tmp_path / "rune-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexec {rune_program} "$@"\n')
    wrapper.chmod(0o755)
    options = tmp_path / "rune.toml"
    options.write_text(f'BinaryName = "{wrapper}"\n')
    result = shim_containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(options),
        image_archive[1],
        "wrapped",
        "echo",
        "through the wrapper",
    )
    assert result.stdout == "through the wrapper\n"
    calls = marker.read_text().splitlines()
    assert any("create" in call.split() for call in calls), calls
    assert any("delete" in call.split() for call in calls), calls
    options.write_text("BinaryName = [\n")
    broken = shim_containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(options),
        image_archive[1],
        "badoptions",
        "true",
        check=False,
    )
    assert broken.returncode != 0
    assert f"runtime options {options}" in broken.stderr
    shim_containerd.ctr("containers", "delete", "badoptions", check=False)
    assert_nothing_left(shim_containerd, "badoptions")


# --- the carrier ------------------------------------------------------------------------------


def _carrier_run(
    containerd: Containerd, image: str, options: Path, carrier: str, name: str, *command: str
) -> subprocess.CompletedProcess[str]:
    return containerd.ctr(
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(options),
        "--env",
        f"RUNE_CARRIER={carrier}",
        image,
        name,
        *command,
        check=False,
    )


def test_an_unknown_carrier_is_refused(
    shim_containerd: Containerd, image_archive: tuple[Path, str], tmp_path: Path
) -> None:
    options = tmp_path / "rune.toml"
    options.write_text("")
    result = _carrier_run(shim_containerd, image_archive[1], options, "sgx2", "unknown", "true")
    assert result.returncode != 0
    assert "RUNE_CARRIER='sgx2': unknown carrier (known: native, wasm)" in result.stderr
    shim_containerd.ctr("containers", "delete", "unknown", check=False)
    assert_nothing_left(shim_containerd, "unknown")


def test_the_native_carrier_runs_an_ordinary_image_as_an_enclave(
    shim_containerd: Containerd,
    image_archive: tuple[Path, str],
    rune_program: str,
    tmp_path: Path,
) -> None:
    import importlib.util

    if importlib.util.find_spec("inclavare.enclave.convert") is None:
        pytest.skip("this tree has no bundle conversion (inclavare.enclave.convert)")
    key = tmp_path / "signing-key.pem"
    subprocess.run(
        [str(Path(rune_program).parent / "enclave-sign"), "genkey", str(key)], check=True
    )
    options = tmp_path / "rune.toml"
    options.write_text(f'SigningKey = "{key}"\n')
    image = image_archive[1]
    ran = _carrier_run(
        shim_containerd, image, options, "native", "carried", "/bin/busybox", "echo", "enclave"
    )
    assert (ran.returncode, ran.stdout) == (0, "enclave\n"), ran.stderr
    assert_nothing_left(shim_containerd, "carried")
    # the bundle is an enclave bundle: the sim enclave's settings and its signature
    shim_containerd.ctr(
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(options),
        "--env",
        "RUNE_CARRIER=native",
        image,
        "carried-long",
        "/bin/busybox",
        "sleep",
        "300",
    )
    bundle = bundle_of(shim_containerd, "carried-long")
    env = json.loads((bundle / "config.json").read_text())["process"]["env"]
    assert "ENCLAVE_TYPE=sim" in env and "ENCLAVE_RUNTIME_PATH=builtin:native" in env
    assert (bundle / "rootfs" / ".inclavare" / "enclave.sig").is_file()
    remove(shim_containerd, "carried-long")
    # what cannot be converted is refused with the reason, and nothing is left
    wasm = _carrier_run(shim_containerd, image, options, "wasm", "notwasm", "/bin/busybox", "true")
    assert wasm.returncode != 0
    assert "RUNE_CARRIER=wasm: /bin/busybox is not a WebAssembly module" in wasm.stderr
    shim_containerd.ctr("containers", "delete", "notwasm", check=False)
    assert_nothing_left(shim_containerd, "notwasm")
    options.write_text(f'SigningKey = "{tmp_path}/missing.pem"\n')
    keyless = _carrier_run(shim_containerd, image, options, "native", "keyless", "/bin/true")
    assert keyless.returncode != 0
    assert f"signing key {tmp_path}/missing.pem: No such file or directory" in keyless.stderr
    shim_containerd.ctr("containers", "delete", "keyless", check=False)
    assert_nothing_left(shim_containerd, "keyless")


def test_update_through_the_task_service(
    shim_containerd: Containerd, image_archive: tuple[Path, str]
) -> None:
    """Update (which ctr 1.6 does not offer) called on the shim's socket as containerd's CRI
    plugin calls it: the LinuxResources JSON in an Any."""
    from inclavare.shim import messages
    from inclavare.shim.ttrpc_server import Client, RpcError

    ctr = shim_containerd.ctr
    ctr("run", "-d", "--runtime", RUNTIME, image_archive[1], "updated", "sleep", "300")
    wait_for_status(shim_containerd, "updated", "RUNNING")
    limit = 40 * 1024 * 1024
    resources = messages.AnyMessage(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps({"memory": {"limit": limit}}).encode(),
    )
    request = messages.UpdateTaskRequest(id="updated", resources=resources)
    with Client(shim_socket(shim_containerd, "updated")) as client:
        client.call("containerd.task.v2.Task", "Update", request.SerializeToString())
        metrics = json.loads(ctr("tasks", "metrics", "--format", "json", "updated").stdout)
        assert metrics["memory"]["usage"]["limit"] == limit
        # a resources document rune refuses: its message comes back
        bad = messages.UpdateTaskRequest(
            id="updated", resources=messages.AnyMessage(type_url="x", value=b"{not json")
        )
        with pytest.raises(RpcError, match="OCI runtime update failed"):
            client.call("containerd.task.v2.Task", "Update", bad.SerializeToString())
        unknown = messages.UpdateTaskRequest(id="nobody", resources=resources)
        with pytest.raises(RpcError, match="container nobody: not found"):
            client.call("containerd.task.v2.Task", "Update", unknown.SerializeToString())
    remove(shim_containerd, "updated")
    assert_nothing_left(shim_containerd, "updated")


def test_containerd_killed_during_create_leaves_nothing_behind(
    shim_containerd: Containerd,
    image_archive: tuple[Path, str],
    rune_program: str,
    tmp_path: Path,
) -> None:
    """containerd dies (SIGKILL) once it started the shim, before or during Create (rune
    create is slowed down): when containerd is back and the container is removed, no shim,
    mount, process or state is left. A shim that never got its container exits by itself
    after IDLE_EXIT seconds, and containerd then cleans up its bundle."""
    from inclavare.shim.daemon import IDLE_EXIT

    slow = tmp_path / "slow-rune"
    slow.write_text(
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = create ] && sleep 2; done\n'
        f'exec {rune_program} "$@"\n'
    )
    slow.chmod(0o755)
    options = tmp_path / "rune.toml"
    options.write_text(f'BinaryName = "{slow}"\n')
    command = ["ctr", "--address", str(shim_containerd.socket), "--namespace"]
    command += [shim_containerd.namespace, "run", "-d", "--runtime", RUNTIME]
    command += ["--runtime-config-path", str(options), image_archive[1], "interrupted"]
    command += ["sleep", "300"]
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not shim_pids(shim_containerd):
        assert time.monotonic() < deadline, "the shim never started"
        time.sleep(0.05)
    shim_containerd.process.kill()
    shim_containerd.process.wait(timeout=20)
    client.communicate(timeout=30)
    assert client.returncode != 0  # its containerd went away
    time.sleep(2.5)  # a `rune create` under way ends meanwhile
    restart_containerd(shim_containerd)
    shim_containerd.remove_everything()
    assert "interrupted" not in shim_containerd.ctr("containers", "ls", "-q").stdout.split()
    deadline = time.monotonic() + IDLE_EXIT + 15
    while shim_pids(shim_containerd) or bundle_of(shim_containerd, "interrupted").exists():
        assert time.monotonic() < deadline, "the shim or its bundle outlived the container"
        time.sleep(0.2)
    assert_nothing_left(shim_containerd, "interrupted")
