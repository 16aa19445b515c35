"""The CRI path as the kubelet drives it: containerd 1.6 (Debian's package) with its CRI
plugin, configured by the node installer's runtime block (handler `rune`, the handler of
deploy/kubernetes/runtimeclass.yaml), and a gRPC CRI v1 client calling RunPodSandbox,
CreateContainer, StartContainer, ExecSync, StopContainer, RemovePodSandbox. Every container,
the pod's sandbox included, runs through containerd-shim-rune-v2 and rune.

The pod uses the node's network (NamespaceMode NODE), so no CNI plugin is involved; its
sandbox image is a static pause program built with gcc and imported like any local image."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml

from inclavare.cli.enclave_sign import main as enclave_sign
from inclavare.k8s.installer import SHIM_PATH, add_runtime
from tests.e2e.cri import CriClient, compile_messages
from tests.e2e.daemons import Containerd, launch_containerd, processes_mentioning
from tests.e2e.images import build_converted_archive, build_pause_archive

pytestmark = pytest.mark.daemon

SHIM = "containerd-shim-rune-v2"
NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace
PAUSE = "localhost/rune-test/pause:1"
CONVERTED = "localhost/converted"
RUNTIME_CLASS = Path(__file__).resolve().parents[2] / "deploy/kubernetes/runtimeclass.yaml"
PAUSE_SOURCE = Path(__file__).resolve().parent / "cri" / "pause.c"


# containerd's CRI plugin handles every container's exit (TaskExit) by deleting the task
# with containerd.WithProcessKill: Kill(SIGKILL, all=true) first, which must answer NOT_FOUND
# for a container that is not running (as the runc shim maps runc's "container not running").
# Otherwise no CRI container or pod can stop: StopContainer, StopPodSandbox and exited
# containers wait for an exit the CRI plugin never finishes handling.
SHIM_KILL_BUG = (
    "containerd-shim-rune-v2: Kill(all=true) of an exited container must answer NOT_FOUND, "
    "not UNKNOWN ('OCI runtime kill failed: container not running')"
)


# containerd 1.6 replaces its default runtimes table by the file's: a config.toml that names
# no runtime of its own (Debian's packaged one) must get runc back with the installer's rune
# block, or the CRI plugin, whose default runtime is runc, does not load.
PACKAGED_CONFIG = Path("/etc/containerd/config.toml")


def runtime_class_handler() -> str:
    handler = yaml.safe_load(RUNTIME_CLASS.read_text())["handler"]
    assert isinstance(handler, str)
    return handler


def cri_config(directory: Path, shim: Path) -> str:
    """containerd's configuration for a node: the CRI plugin with its state under
    directory, then the rune runtime as inclavare-node-installer adds it, the shim's path
    being this tree's launcher instead of the installed one."""
    base = (
        "version = 2\n"
        f'root = "{directory}/root"\n'
        f'state = "{directory}/state"\n'
        "[grpc]\n"
        f'  address = "{directory}/containerd.sock"\n'
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f'  path = "{directory}/opt"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        f'  sandbox_image = "{PAUSE}"\n'
        '  stream_server_address = "127.0.0.1"\n'
        # oom_score_adj no lower than containerd's own: root here may lack CAP_SYS_RESOURCE,
        # and the kubelet's -998 for a sandbox would be refused (by runc as by rune)
        "  restrict_oom_score_adj = true\n"
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        f'  conf_dir = "{directory}/cni/net.d"\n'
        f'  bin_dir = "{directory}/cni/bin"\n'
        # as in `containerd config default`: a runtimes table replaces the default one
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
    )
    installed = add_runtime(base, "config.toml")
    assert f'"{SHIM_PATH}"' in installed
    # the operator's runtime options for the shim (its carrier's signing key), as
    # docs/containerd-shim.md shows them
    options = (
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune.options]\n'
        f'  ConfigPath = "{directory}/rune.toml"\n'
    )
    return installed.replace(f'"{SHIM_PATH}"', f'"{shim}"') + options


class Node:
    """The private containerd and a CRI client of it."""

    def __init__(self, containerd: Containerd, client: CriClient, messages: ModuleType) -> None:
        self.containerd = containerd
        self.cri = client
        self.m = messages
        self.logs = containerd.directory / "pods"
        self.exits_handled = True
        self.rune = "rune"
        self.sim = Path()
        self.conversion: dict[str, Any] = {}

    def sandbox_config(self, name: str) -> Any:
        m = self.m
        node = m.NamespaceOption(network=m.NODE, pid=m.CONTAINER, ipc=m.POD)
        return m.PodSandboxConfig(
            metadata=m.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()), namespace="e2e"),
            log_directory=str(self.logs / name),
            linux=m.LinuxPodSandboxConfig(
                security_context=m.LinuxSandboxSecurityContext(namespace_options=node)
            ),
        )

    def run_pod(self, name: str, handler: str = "rune") -> tuple[str, Any]:
        config = self.sandbox_config(name)
        response = self.cri.runtime("RunPodSandbox", config=config, runtime_handler=handler)
        return response.pod_sandbox_id, config

    def create(
        self,
        pod: str,
        sandbox: Any,
        name: str,
        image: str,
        command: list[str],
        env: dict[str, str] | None = None,
    ) -> str:
        m = self.m
        config = m.ContainerConfig(
            metadata=m.ContainerMetadata(name=name),
            image=m.ImageSpec(image=image),
            command=command,
            envs=[m.KeyValue(key=key, value=value) for key, value in (env or {}).items()],
            log_path=f"{name}/0.log",
            linux=m.LinuxContainerConfig(
                security_context=m.LinuxContainerSecurityContext(
                    namespace_options=m.NamespaceOption(network=m.NODE, pid=m.CONTAINER)
                )
            ),
        )
        response = self.cri.runtime(
            "CreateContainer", pod_sandbox_id=pod, config=config, sandbox_config=sandbox
        )
        container_id: str = response.container_id
        return container_id

    def kill_all_answer(self, image: str) -> subprocess.CompletedProcess[str]:
        """`ctr tasks kill --all` of a rune container whose process has exited (in a
        namespace of its own, out of the CRI plugin's way), then the container removed."""
        ctr = ["ctr", "--address", str(self.containerd.socket), "--namespace", "rune-probe"]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*ctr, *args], capture_output=True, text=True, timeout=60)

        assert run("images", "import", str(image)).returncode == 0
        reference = run("images", "ls", "-q").stdout.split()[0]
        started = run("run", "-d", "--runtime", "io.containerd.rune.v2", reference, "probe", "true")
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 10
        while "STOPPED" not in run("tasks", "ls").stdout:
            assert time.monotonic() < deadline, "the probe never stopped"
            time.sleep(0.05)
        answer = run("tasks", "kill", "--all", "--signal", "KILL", "probe")
        assert run("tasks", "delete", "probe").returncode == 0
        assert run("containers", "delete", "probe").returncode == 0
        return answer

    def require_exit_handling(self) -> None:
        if not self.exits_handled:
            pytest.fail(SHIM_KILL_BUG)

    def status(self, container: str) -> Any:
        return self.cri.runtime("ContainerStatus", container_id=container).status

    def wait_for_state(self, container: str, state: int) -> Any:
        deadline = time.monotonic() + 20
        while (status := self.status(container)).state != state:
            assert time.monotonic() < deadline, f"{container} stays in state {status.state}"
            time.sleep(0.05)
        return status

    def log(self, pod_name: str, container_name: str) -> list[str]:
        """The container's output from the CRI log file: `TIME STREAM TAG TEXT` lines."""
        path = self.logs / pod_name / container_name / "0.log"
        return [line.split(" ", 3)[3] for line in path.read_text().splitlines()]

    def remove_pod(self, pod: str) -> None:
        self.cri.runtime("StopPodSandbox", pod_sandbox_id=pod)
        self.cri.runtime("RemovePodSandbox", pod_sandbox_id=pod)

    def shim_pids(self) -> list[int]:
        return [
            pid
            for pid in processes_mentioning(str(self.containerd.socket))
            if SHIM.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]

    def assert_nothing_left(self, *ids: str) -> None:
        """No shim, no mount of a bundle, no rune state, no task directory."""
        deadline = time.monotonic() + 10
        while self.shim_pids():
            assert time.monotonic() < deadline, f"shims left: {self.shim_pids()}"
            time.sleep(0.05)
        tasks = self.containerd.directory / "state" / "io.containerd.runtime.v2.task" / NAMESPACE
        with open("/proc/self/mountinfo") as mountinfo:
            mounts = [line.split()[4] for line in mountinfo]
        cgroups = list(Path("/sys/fs/cgroup").glob(f"*/{NAMESPACE}"))
        for identifier in ids:
            assert not [point for point in mounts if identifier in point], identifier
            assert not [path for path in cgroups if (path / identifier).exists()], identifier
            assert not Path(f"/run/containerd/rune/{NAMESPACE}/{identifier}").exists()
            assert not (tasks / identifier).exists()


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, rune_program: str, image_archive: tuple[Path, str]
) -> Iterator[Node]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed: run `make install`")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: run `make install`")
    launchers = Path(rune_program).parent
    if not os.access(launchers / SHIM, os.X_OK):
        pytest.skip(f"{SHIM} is not installed beside {rune_program}: run `make install`")
    directory = tmp_path_factory.mktemp("cri")
    images = directory / "images"
    images.mkdir()
    pause = images / "pause"
    subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", pause, PAUSE_SOURCE],
        check=True,
    )
    build_pause_archive(images / "pause.tar", pause, PAUSE)
    busybox = images / "busybox"
    busybox.mkdir()
    converted = build_converted_archive(busybox)
    messages = compile_messages(images)
    key = directory / "containerd" / "signing-key.pem"
    key.parent.mkdir()
    assert enclave_sign(["genkey", str(key)]) == 0
    # the carrier's config.toml keeps its conversion cache in the test's directory
    inclavare = directory / "containerd" / "inclavare.toml"
    inclavare.write_text(f'[enclave_runtime.cache]\ndirectory = "{directory}/carrier-cache"\n')
    (directory / "containerd" / "rune.toml").write_text(
        f'SigningKey = "{key}"\nInclavareConfig = "{inclavare}"\n'
    )
    containerd = launch_containerd(
        directory / "containerd",
        cri_config(directory / "containerd", launchers / SHIM),
        path=[str(launchers)],
        # rune, started by the shims, keeps the sim TEE's platform in the test's directory
        variables={"INCLAVARE_SIM_DIR": str(directory / "sim")},
    )
    containerd.namespace = NAMESPACE
    client = CriClient(containerd.socket, messages, timeout=20)
    try:
        containerd.ctr("images", "import", str(images / "pause.tar"))
        containerd.ctr("images", "import", "--base-name", CONVERTED, str(converted))
        node = Node(containerd, client, messages)
        node.rune = rune_program
        node.sim = directory / "sim"
        node.conversion = json.loads((busybox / "conversion.json").read_text())
        probe = node.kill_all_answer(str(image_archive[0]))
        node.exits_handled = probe.returncode != 0 and "not found" in probe.stderr
        yield node
        for pod in client.runtime("ListPodSandbox").items:
            client.runtime("StopPodSandbox", pod_sandbox_id=pod.id)
            client.runtime("RemovePodSandbox", pod_sandbox_id=pod.id)
    finally:
        client.close()
        containerd.stop()
        # the parent cgroups the CRI plugin's cgroupsPath (/k8s.io/<id>) made rune create
        for parent in Path("/sys/fs/cgroup").glob(f"*/{NAMESPACE}"):
            with contextlib.suppress(OSError):  # still in use by another node's containers
                parent.rmdir()


@pytest.fixture(scope="module")
def busybox(node: Node, image_archive: tuple[Path, str]) -> str:
    node.containerd.ctr("images", "import", str(image_archive[0]))
    return image_archive[1]


def test_version_status_and_the_rune_handler(node: Node) -> None:
    version = node.cri.runtime("Version", version="v1")
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    status = node.cri.runtime("Status", verbose=True)
    conditions = {condition.type: condition.status for condition in status.status.conditions}
    assert conditions["RuntimeReady"] is True
    # no CNI configuration: pods with their own network could not start, those on the
    # node's network (all of this module's) do
    assert conditions["NetworkReady"] is False
    config = json.loads(status.info["config"])
    rune = config["containerd"]["runtimes"][runtime_class_handler()]
    assert rune["runtimeType"] == "io.containerd.rune.v2"
    assert config["sandboxImage"] == PAUSE


def test_kill_all_of_an_exited_container_answers_not_found(
    node: Node, image_archive: tuple[Path, str]
) -> None:
    answer = node.kill_all_answer(str(image_archive[0]))
    assert answer.returncode != 0
    assert "not found" in answer.stderr, answer.stderr
    assert not node.shim_pids()
    assert not Path("/run/containerd/rune/rune-probe/probe").exists()


def test_a_pod_through_the_rune_handler(node: Node, busybox: str) -> None:
    node.require_exit_handling()
    m = node.m
    pod, sandbox = node.run_pod("lifecycle", handler=runtime_class_handler())
    pod_status = node.cri.runtime("PodSandboxStatus", pod_sandbox_id=pod).status
    assert pod_status.state == m.SANDBOX_READY
    assert pod_status.runtime_handler == "rune"
    shims = node.shim_pids()
    assert len(shims) == 1  # the sandbox's shim

    # a pod's init that stops cleanly on SIGTERM, the signal StopContainer sends first
    script = 'trap "echo stopping; exit 0" TERM; echo started; sleep 300 & wait'
    container = node.create(pod, sandbox, "app", busybox, ["sh", "-c", script])
    node.cri.runtime("StartContainer", container_id=container)
    status = node.wait_for_state(container, m.CONTAINER_RUNNING)
    assert status.log_path.endswith("app/0.log")
    assert node.shim_pids() == shims  # the pod's containers share its shim
    listed = node.cri.runtime("ListContainers").containers
    assert [(item.id, item.pod_sandbox_id) for item in listed] == [(container, pod)]

    executed = node.cri.runtime(
        "ExecSync", container_id=container, cmd=["echo", "from exec"], timeout=30
    )
    assert (executed.stdout, executed.stderr, executed.exit_code) == (b"from exec\n", b"", 0)
    failed = node.cri.runtime(
        "ExecSync", container_id=container, cmd=["sh", "-c", "echo oops >&2; exit 4"]
    )
    assert (failed.stderr, failed.exit_code) == (b"oops\n", 4)

    node.cri.runtime("StopContainer", container_id=container, timeout=20)
    stopped = node.status(container)
    assert (stopped.state, stopped.exit_code) == (m.CONTAINER_EXITED, 0)
    assert node.log("lifecycle", "app") == ["started", "stopping"]
    node.cri.runtime("RemoveContainer", container_id=container)
    node.remove_pod(pod)
    assert not node.cri.runtime("ListPodSandbox").items
    node.assert_nothing_left(pod, container)


def test_the_exit_code_of_a_container(node: Node, busybox: str) -> None:
    node.require_exit_handling()
    pod, sandbox = node.run_pod("exits")
    container = node.create(
        pod, sandbox, "three", busybox, ["sh", "-c", "echo out; echo err >&2; exit 3"]
    )
    node.cri.runtime("StartContainer", container_id=container)
    status = node.wait_for_state(container, node.m.CONTAINER_EXITED)
    assert (status.exit_code, status.reason) == (3, "Error")
    assert sorted(node.log("exits", "three")) == ["err", "out"]
    node.cri.runtime("RemoveContainer", container_id=container)
    node.remove_pod(pod)
    node.assert_nothing_left(pod, container)


def test_an_enclave_container_from_a_converted_image(node: Node) -> None:
    node.require_exit_handling()
    pod, sandbox = node.run_pod("enclave")
    script = 'trap "exit 0" TERM; echo in enclave; env; sleep 300 & wait'
    container = node.create(pod, sandbox, "signed", f"{CONVERTED}:enclave", ["sh", "-c", script])
    node.cri.runtime("StartContainer", container_id=container)
    node.wait_for_state(container, node.m.CONTAINER_RUNNING)
    # rune's report of the enclave the CRI plugin started: the measurement of the conversion
    report = subprocess.run(
        [node.rune, "--root", f"/run/containerd/rune/{NAMESPACE}", "attest", container],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, INCLAVARE_SIM_DIR=str(node.sim)),
    )
    assert report.returncode == 0, report.stderr
    attested = json.loads(report.stdout)
    assert attested["mrenclave"] == node.conversion["mrenclave"]
    assert attested["simulated"] is True
    node.cri.runtime("StopContainer", container_id=container, timeout=20)
    assert node.status(container).exit_code == 0
    output = node.log("enclave", "signed")
    assert output[0] == "in enclave"
    # the image's Env asks for a sim enclave; rune takes ENCLAVE_* out of an enclave's env
    assert any(line.startswith("PATH=") for line in output)
    assert not [line for line in output if line.startswith("ENCLAVE_")]
    node.cri.runtime("RemoveContainer", container_id=container)
    node.remove_pod(pod)
    node.assert_nothing_left(pod, container)


def test_a_tampered_enclave_image_is_refused_with_the_reason(node: Node) -> None:
    node.require_exit_handling()
    pod, sandbox = node.run_pod("tampered")
    container = node.create(pod, sandbox, "tampered", f"{CONVERTED}:tampered", ["true"])
    with pytest.raises(grpc.RpcError) as refused:
        node.cri.runtime("StartContainer", container_id=container)
    assert "enclave launch refused: trusted file /etc/passwd differs" in refused.value.details()
    node.cri.runtime("RemoveContainer", container_id=container)
    node.remove_pod(pod)
    node.assert_nothing_left(pod, container)


def test_the_carrier_runs_an_ordinary_image_as_an_enclave(node: Node, busybox: str) -> None:
    """RUNE_CARRIER in the container's environment (a pod spec's `env`): the shim converts
    the ordinary image's bundle into a signed sim enclave at create."""
    node.require_exit_handling()
    pod, sandbox = node.run_pod("carrier")
    carried = node.create(
        pod,
        sandbox,
        "carried",
        busybox,
        ["/bin/busybox", "echo", "carried"],
        env={"RUNE_CARRIER": "native"},
    )
    node.cri.runtime("StartContainer", container_id=carried)
    status = node.wait_for_state(carried, node.m.CONTAINER_EXITED)
    assert status.exit_code == 0, status.message
    assert node.log("carrier", "carried") == ["carried"]
    unknown = node.create(
        pod, sandbox, "unknown", busybox, ["/bin/busybox", "true"], env={"RUNE_CARRIER": "sgx2"}
    )
    with pytest.raises(grpc.RpcError) as refused:
        node.cri.runtime("StartContainer", container_id=unknown)
    assert "RUNE_CARRIER='sgx2': unknown carrier (known: native, wasm)" in refused.value.details()
    for container in (carried, unknown):
        node.cri.runtime("RemoveContainer", container_id=container)
    node.remove_pod(pod)
    node.assert_nothing_left(pod, carried, unknown)


def test_an_unknown_runtime_handler_is_refused(node: Node) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        node.run_pod("unknown", handler="no-such-handler")
    assert 'no runtime for "no-such-handler" is configured' in refused.value.details()
    assert not node.cri.runtime("ListPodSandbox").items
    node.assert_nothing_left()


def test_a_failed_rune_create_reaches_the_cri_client(node: Node, busybox: str) -> None:
    node.require_exit_handling()
    pod, sandbox = node.run_pod("broken")
    container = node.create(pod, sandbox, "broken", busybox, ["no-such-program"])
    with pytest.raises(grpc.RpcError) as failed:
        node.cri.runtime("StartContainer", container_id=container)
    details = failed.value.details()
    assert "OCI runtime create failed" in details and "executable file not found" in details
    assert node.status(container).state != node.m.CONTAINER_RUNNING
    node.cri.runtime("RemoveContainer", container_id=container)
    # the pod's sandbox still works
    executed = node.create(pod, sandbox, "fine", busybox, ["echo", "fine"])
    node.cri.runtime("StartContainer", container_id=executed)
    assert node.wait_for_state(executed, node.m.CONTAINER_EXITED).exit_code == 0
    node.cri.runtime("RemoveContainer", container_id=executed)
    node.remove_pod(pod)
    node.assert_nothing_left(pod, container, executed)


def test_the_installer_on_the_packaged_config_keeps_the_cri_plugin(
    node: Node, tmp_path: Path
) -> None:
    """The installer's block added to the config.toml Debian's containerd package ships
    (its root, state and sockets moved into tmp_path): the CRI plugin still loads and has
    both runc and rune."""
    if not PACKAGED_CONFIG.exists() or "[plugins" not in PACKAGED_CONFIG.read_text():
        pytest.skip(f"no packaged containerd configuration at {PACKAGED_CONFIG}")
    text = PACKAGED_CONFIG.read_text().replace('"/var/lib/containerd/opt"', f'"{tmp_path}/opt"')
    version, rest = text.split("\n", 1)
    private = (
        f'{version}\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        f'[grpc]\n  address = "{tmp_path}/containerd.sock"\n{rest}'
    )
    daemon = launch_containerd(tmp_path, add_runtime(private, str(PACKAGED_CONFIG)))
    client = CriClient(daemon.socket, node.m, timeout=20)
    try:
        try:
            status = client.runtime("Status", verbose=True)
        except grpc.RpcError as error:
            failures = [
                line
                for line in (tmp_path / "containerd.log").read_text().splitlines()
                if "failed to load plugin io.containerd.grpc.v1.cri" in line
            ]
            raise AssertionError(f"{error.details()}: {failures}") from None
        runtimes = json.loads(status.info["config"])["containerd"]["runtimes"]
        assert sorted(runtimes) == ["runc", "rune"]
    finally:
        client.close()
        daemon.stop()
