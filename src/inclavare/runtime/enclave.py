"""rune's side of enclave containers: the checks and the launch at create, and the agent's
client for `exec` and `attest`.

At create, before anything exists on the host, rune reads the enclave configuration
(ENCLAVE_* in process.env, or enclave.* annotations; the ENCLAVE_* entries leave the
payload's environment), finds the entrypoint in the root file system and, on the sim TEE,
launches the enclave: the signature file is checked against the trusted files as they are
(or, for an unsigned enclave, they are measured and signed with a throwaway key, as a debug
enclave) and the platform makes the launch record the runtime gets through its init. A
refusal names the file or the reason, and nothing is left behind. On intelSgx the SGX device
nodes and /var/run/aesmd are added to the container.

An enclave with an EPC budget (ENCLAVE_EPC_LIMIT_MIB, what the Kubernetes device plugin
allocates) on the sim TEE has its memory cgroup limited to the budget (or to the spec's
memory limit when that is lower): an enclave that outgrows it is killed by the kernel's OOM
killer, and `rune run` and `rune events` say that the EPC budget was exceeded.

The container's init then becomes the init-runelet (enclave/runelet.py), which rune reaches
through `agent.sock` in the state directory (enclave/agent.py).

Only enclave containers import this module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from inclavare import log
from inclavare.enclave import agent
from inclavare.enclave.config import TYPE_INTEL_SGX, TYPE_SIM, resolve_enclave
from inclavare.enclave.runelet import EnclavePlan
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cgroups.resources import Resources
    from inclavare.oci.spec import Spec
    from inclavare.runtime.container import Container

SIM_DISCLAIMER = "simulated TEE: no confidentiality or integrity against the host's root"


class EnclaveError(InclavareError):
    """An enclave container cannot be created or reached."""


def prepare_enclave(spec: Spec, rootfs: str, state_dir: str) -> EnclavePlan | None:
    """The enclave plan of the container, None for an ordinary one. Changes `spec`: the
    payload's environment loses ENCLAVE_*, intelSgx gains the SGX devices and aesmd."""
    resolution = resolve_enclave(spec.raw)
    for warning in resolution.warnings:
        log.warning(warning)
    config = resolution.enclave
    if config is None:
        return None
    process = spec.process
    assert process is not None
    process.env = list(resolution.env)
    spec.raw["process"]["env"] = list(resolution.env)
    if not config.builtin and not os.path.isfile(config.runtime_path):
        raise EnclaveError(
            f"the enclave runtime (PAL) {config.runtime_path} does not exist or is not a file"
        )
    from inclavare.tee.sim.files import find_entrypoint

    entrypoint = find_entrypoint(rootfs, process.args[0], process.env, process.cwd)
    description: dict[str, object] = {
        "type": config.type,
        "runtime": config.runtime_path,
        "entrypoint": entrypoint,
    }
    if config.epc_limit_mib is not None:
        description["epc_limit_mib"] = config.epc_limit_mib
    if config.type == TYPE_INTEL_SGX:
        _add_sgx_devices(spec, config.sgx_devices)
        description["simulated"] = False
        return EnclavePlan(config, entrypoint, state_dir, description)

    assert config.type == TYPE_SIM
    from inclavare.tee.sim.files import LaunchRequest, launch_enclave
    from inclavare.tee.sim.measurement import RuntimeIdentity
    from inclavare.tee.sim.store import load_platform

    identity = RuntimeIdentity.for_runtime_path(config.runtime_path)
    launched = launch_enclave(LaunchRequest(rootfs, identity, entrypoint))
    platform = load_platform()
    log.info(launched.describe())
    description.update(
        simulated=True,
        note=SIM_DISCLAIMER,
        runtime_identity=str(identity),
        mrenclave=launched.mr_enclave.hex(),
        mrsigner=launched.mr_signer.hex(),
        isvprodid=launched.identity.isv_prod_id,
        isvsvn=launched.identity.isv_svn,
        debug=launched.debug,
        signed=launched.signed,
        trusted_files=list(launched.manifest.paths),
    )
    return EnclavePlan(
        config,
        entrypoint,
        state_dir,
        description,
        launched.manifest,
        platform.launch_record(launched.identity),
    )


def apply_epc_budget(spec: Spec, resources: Resources, plan: EnclavePlan) -> None:
    """Limit the container's memory to the enclave's EPC budget: the lower of the budget and
    the spec's memory limit, with no swap beyond it. Changes `resources` and the spec's
    `linux.resources` (what `update` starts from)."""
    budget_mib = plan.config.epc_limit_mib
    if budget_mib is None:
        return
    if plan.config.type != TYPE_SIM:
        log.warning(
            f"the EPC budget of {budget_mib} MiB is not enforced on {plan.config.type}: "
            "this kernel's memory cgroup does not count enclave pages"
        )
        return
    from inclavare.cgroups.resources import Memory

    budget = budget_mib << 20
    memory = resources.memory
    if memory is None:
        memory = resources.memory = Memory()
    if memory.limit is None or memory.limit < 0 or memory.limit > budget:
        memory.limit = budget
    memory.swap = memory.limit
    raw = spec.linux.resources.setdefault("memory", {})
    raw["limit"] = memory.limit
    raw["swap"] = memory.swap
    log.info(f"enclave memory limited to {memory.limit >> 20} MiB by its EPC budget")


def epc_budget_exceeded(container: Container) -> str | None:
    """Why the enclave ended, when the kernel's OOM killer struck in the cgroup of a container
    with an EPC budget; None otherwise."""
    budget = container.record.get("enclave", {}).get("epc_limit_mib")
    leaves = container.record.get("cgroup_dirs_leaf", [])
    if budget is None or not leaves:
        return None
    from inclavare.cgroups import oom_kills

    try:
        kills = oom_kills(leaves)
    except (InclavareError, OSError):
        return None
    if kills == 0:
        return None
    return (
        f"enclave container {container.id} exceeded its EPC budget of {budget} MiB: "
        "the kernel's OOM killer killed it"
    )


def _add_sgx_devices(spec: Spec, devices: Sequence[str]) -> None:
    """The SGX device nodes of the host and the aesmd socket directory, into the container."""
    import stat

    from inclavare.oci.spec import Device, Mount, _Object

    present = {device.path for device in spec.linux.devices}
    for path in devices:
        if path in present:
            continue
        info = os.stat(path)
        if not stat.S_ISCHR(info.st_mode):
            continue
        spec.linux.devices.append(
            Device(path, "c", os.major(info.st_rdev), os.minor(info.st_rdev), 0o666, 0, 0)
        )
    aesmd = "/var/run/aesmd"
    if os.path.isdir(aesmd) and all(mount.destination != aesmd for mount in spec.mounts):
        raw = {"destination": aesmd, "type": "bind", "source": aesmd, "options": ["rbind", "rw"]}
        spec.mounts.append(Mount(_Object(raw, "mounts[aesmd]")))


# --- the agent's client ------------------------------------------------------------------------


class AgentClient:
    """A connection to the init-runelet of an enclave container."""

    def __init__(self, container: Container) -> None:
        if not container.record.get("enclave"):
            raise EnclaveError(f"container {container.id} is not an enclave container")
        self.sock = _connect(container.state_dir)
        self.protocol = agent.Connection(agent.CLIENT)
        self._waiting: list[agent.Message] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, message: agent.Message) -> None:
        data = self.protocol.send(message)
        if isinstance(message, agent.Exec):
            socket.send_fds(self.sock, [data], list(message.fds))
        else:
            self.sock.sendall(data)

    def receive(self) -> agent.Message | None:
        """The agent's next message; None when it closed the connection."""
        while not self._waiting:
            data = self.sock.recv(65536)
            self._waiting += self.protocol.receive_data(data)
            if not data:
                break
        return self._waiting.pop(0) if self._waiting else None

    def request(self, message: agent.Message) -> agent.Message:
        self.send(message)
        reply = self.receive()
        if reply is None:
            raise EnclaveError("the enclave container's init-runelet closed the connection")
        if isinstance(reply, agent.Error):
            raise EnclaveError(reply.message)
        return reply


def _connect(state_dir: str) -> socket.socket:
    directory = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(f"/proc/self/fd/{directory}/{agent.SOCKET_NAME}")
        except OSError as error:
            sock.close()
            raise EnclaveError(
                f"cannot reach the enclave container's agent in {state_dir}: {error.strerror}"
            ) from None
        return sock
    finally:
        os.close(directory)


def local_report(container: Container, target_info: bytes, report_data: bytes = b"") -> bytes:
    client = AgentClient(container)
    try:
        reply = client.request(agent.ReportRequest(target_info, report_data))
    finally:
        client.close()
    assert isinstance(reply, agent.Report)
    return reply.report


def enclave_info(container: Container) -> dict[str, object]:
    client = AgentClient(container)
    try:
        reply = client.request(agent.InfoRequest())
    finally:
        client.close()
    assert isinstance(reply, agent.Info)
    return reply.enclave


def exec_in_enclave(
    container: Container,
    argv: Sequence[str],
    env: Sequence[str],
    cwd: str,
    detach: bool,
    pid_file: str = "",
) -> int:
    """Run a process in the enclave with rune's standard streams; unless detached, pass on
    the signals rune gets and return the process's exit status.

    The process is the enclave runtime's, a child of the container's init, which its caller
    cannot wait for. Detached, rune therefore leaves a proxy behind, whose pid goes to the
    pid file: it waits for the process's end through the agent, passes signals on, and exits
    with the same status, so a shim that waits for the pid (containerd's, for `docker exec`)
    sees what it would see with runc."""
    client = AgentClient(container)
    try:
        reply = client.request(agent.Exec(tuple(argv), tuple(env), cwd, (0, 1, 2)))
        assert isinstance(reply, agent.Started)
        if not detach:
            if pid_file:
                from inclavare.runtime.create import write_pid_file

                write_pid_file(pid_file, reply.pid)
            return _follow(client, container, reply.pid)
        proxy = os.fork()
        if proxy == 0:
            _become_proxy(client, container, reply.pid)
        if pid_file:
            from inclavare.runtime.create import write_pid_file

            write_pid_file(pid_file, proxy)
        return 0
    finally:
        client.close()


def _become_proxy(client: AgentClient, container: Container, pid: int) -> None:
    """The detached exec's stand-in. Never returns."""
    code = 255
    try:
        # The enclave process has the caller's streams; the proxy must not keep them open.
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        code = _follow(client, container, pid)
    except BaseException as error:
        log.error(f"exec proxy for process {pid}: {error}")
    finally:
        os._exit(code)


def _follow(client: AgentClient, container: Container, pid: int) -> int:
    """Pass rune's signals on to the enclave process; return its exit status."""
    import signal

    def forward(number: int, frame: object) -> None:
        try:
            client.send(agent.Signal(number))
        except (OSError, agent.AgentProtocolError):
            pass

    for number in range(1, signal.NSIG):
        if number in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE):
            continue
        try:
            signal.signal(number, forward)
        except (OSError, ValueError):
            pass
    while True:
        message = client.receive()
        if message is None:
            raise EnclaveError(
                f"the enclave container {container.id} stopped before process {pid} ended"
            )
        if isinstance(message, agent.Exited):
            return message.code
        if isinstance(message, agent.Error):
            log.warning(message.message)  # a signal that could not be delivered
