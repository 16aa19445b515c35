"""`create`: rune's side of making a container, up to the point where it waits to be started.

The state directory is created first (its mkdir is what makes a duplicate id an error, even
between concurrent rune processes) and state.json is written before anything is created on
the host, listing the cgroup directories about to be made. Whatever happens later, including
rune itself being killed, `delete --force` finds everything there is to remove. On a failure,
everything made so far is removed before the error is reported.
"""

from __future__ import annotations

import os
import time

from inclavare import log
from inclavare.cgroups import (
    Cgroup,
    apply_resources,
    open_cgroup,
    processes_in,
    remove_directories,
    signal_all,
    validate_resources,
)
from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.linux.constants import PR_SET_CHILD_SUBREAPER
from inclavare.linux.proc import read_stat
from inclavare.oci.spec import SpecError, load_spec
from inclavare.runtime.container import (
    CREATED,
    CREATING,
    Container,
    ContainerError,
    StateLock,
    check_id,
)
from inclavare.runtime.init import InitPlan, run_stage1
from inclavare.runtime.sync import ContainerSetupError, SyncChannel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cgroups.resources import Resources
    from inclavare.enclave.runelet import EnclavePlan
    from inclavare.linux.seccomp import SeccompProfile
    from inclavare.oci.spec import IDMapping, Spec


class CreateOptions:
    """The flags of `create` (and of `run`, which creates first)."""

    __slots__ = (
        "bundle",
        "console_socket",
        "console_socket_fd",
        "no_new_keyring",
        "no_pivot",
        "pid_file",
        "preserve_fds",
    )

    def __init__(self, bundle: str = "") -> None:
        self.bundle = bundle
        self.console_socket = ""
        self.console_socket_fd = -1  # an already connected socket (used by `run`)
        self.pid_file = ""
        self.no_pivot = False
        self.no_new_keyring = False
        self.preserve_fds = 0


def timestamp() -> str:
    """Now in RFC 3339 with nanoseconds, UTC, as runc records `created`."""
    now = time.time_ns()
    seconds, nanoseconds = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds:09d}Z"


def warn_unsupported(spec: Spec) -> None:
    """What this host cannot honour is reported, not silently dropped."""
    from inclavare.linux.capabilities import unsupported

    process = spec.process
    if process is not None and process.apparmor_profile:
        log.warning("apparmorProfile is set but AppArmor is not supported by rune; ignored")
    if process is not None and process.selinux_label:
        log.warning("selinuxLabel is set but SELinux is not supported by rune; ignored")
    if spec.linux.mount_label:
        log.warning("mountLabel is set but SELinux is not supported by rune; ignored")
    if process is not None and process.capabilities is not None:
        sets = process.capabilities
        names = sets.bounding + sets.effective + sets.permitted + sets.inheritable + sets.ambient
        for name in unsupported(names):
            log.warning(f"capability {name} is not supported by this kernel; ignored")


def _check_bundle(spec: Spec, bundle: str, options: CreateOptions) -> str:
    """The absolute rootfs path; an error for what can be known wrong before forking."""
    if spec.process is None:
        raise SpecError("process", "required")
    rootfs = os.path.join(bundle, spec.root.path)
    if not os.path.isdir(rootfs):
        raise InclavareError(f"rootfs ({rootfs}) does not exist")
    terminal = spec.process.terminal
    has_socket = bool(options.console_socket) or options.console_socket_fd >= 0
    if terminal and not has_socket:
        raise InclavareError(
            "cannot allocate a terminal without --console-socket"
            " (process.terminal is true in config.json)"
        )
    if has_socket and not terminal:
        raise InclavareError("--console-socket given but process.terminal is false in config.json")
    return os.path.realpath(rootfs)


def _listen_fds() -> int:
    """Descriptors passed by systemd socket activation, passed on to the container as runc does."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0
    count = os.environ.get("LISTEN_FDS", "")
    return int(count) if count.isdigit() else 0


def _write_id_map(pid: int, name: str, mappings: list[IDMapping]) -> None:
    text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
    fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    except OSError as error:
        raise InclavareError(f"write {name} {text.strip()!r}: {error.strerror}") from None
    finally:
        os.close(fd)


def _host_id(container_id: int, mappings: list[IDMapping]) -> int:
    for mapping in mappings:
        if mapping.container_id <= container_id < mapping.container_id + mapping.size:
            return mapping.host_id + container_id - mapping.container_id
    return container_id if not mappings else -1


def _make_exec_fifo(path: str, spec: Spec) -> None:
    """The fifo the init opens for writing once it has become the container's user: owned
    by that user (as seen from the host, through the id mappings) and writable by others."""
    assert spec.process is not None
    os.mkfifo(path, 0o622)
    os.chmod(path, 0o622)  # the umask removed the write bits of group and others
    uid = _host_id(spec.process.user.uid, spec.linux.uid_mappings)
    gid = _host_id(spec.process.user.gid, spec.linux.gid_mappings)
    os.chown(path, uid, gid)


def write_pid_file(path: str, pid: int) -> None:
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}")
    with open(temporary, "w") as pid_file:
        pid_file.write(str(pid))
    os.rename(temporary, path)


def create_container(
    root: str, container_id: str, options: CreateOptions, spec: Spec | None = None
) -> Container:
    """Create the container; `spec` is the bundle's config.json when the caller read it."""
    check_id(container_id)
    bundle = os.path.abspath(options.bundle or os.getcwd())
    if spec is None:
        spec = load_spec(bundle)
    rootfs = _check_bundle(spec, bundle, options)
    seccomp = _compile_seccomp(spec)
    resources = validate_resources(spec.linux.resources)
    warn_unsupported(spec)
    state_dir = os.path.join(root, container_id)
    enclave = _plan_enclave(spec, rootfs, state_dir)
    if enclave is not None and enclave.config.epc_limit_mib is not None:
        from inclavare.runtime.enclave import apply_epc_budget

        apply_epc_budget(spec, resources, enclave)

    os.makedirs(root, 0o711, exist_ok=True)
    try:
        os.mkdir(state_dir, 0o711)
    except FileExistsError:
        raise ContainerError(f"container with id exists: {container_id}") from None
    container = Container(
        root,
        container_id,
        {
            "phase": CREATING,
            "id": container_id,
            "bundle": bundle,
            "rootfs": rootfs,
            "config": spec.raw,
            "created": timestamp(),
            "owner": "",
        },
    )
    if enclave is not None:
        container.record["enclave"] = enclave.description
    with StateLock(state_dir) as lock:
        try:
            _launch(container, spec, options, lock.fd, seccomp, resources, enclave)
            if options.pid_file:
                write_pid_file(options.pid_file, container.pid)
        except BaseException:
            abandon(container)
            raise
    return container


def _plan_enclave(spec: Spec, rootfs: str, state_dir: str) -> EnclavePlan | None:
    """The enclave of an enclave container, launched and checked before anything is made;
    None for an ordinary container, which imports nothing of the enclave code."""
    process = spec.process
    mentioned = any(key.startswith("enclave.") for key in spec.annotations) or (
        process is not None and any(entry.startswith("ENCLAVE_") for entry in process.env)
    )
    if not mentioned:
        return None
    from inclavare.runtime.enclave import prepare_enclave

    return prepare_enclave(spec, rootfs, state_dir)


def _compile_seccomp(spec: Spec) -> SeccompProfile | None:
    """Check the seccomp profile before anything is made (the init loads it)."""
    if spec.linux.seccomp is None:
        return None
    from inclavare.linux.seccomp import compile_profile

    return compile_profile(spec.linux.seccomp)


def _launch(
    container: Container,
    spec: Spec,
    options: CreateOptions,
    lock_fd: int,
    seccomp: SeccompProfile | None,
    resources: Resources,
    enclave: EnclavePlan | None = None,
) -> None:
    record = container.record
    cgroup = open_cgroup(spec.linux.cgroups_path, container.id)
    for warning in cgroup.check_resources(resources):
        log.warning(warning)
    record["resources"] = spec.linux.resources  # what `update` starts from
    record["cgroup_dirs"] = cgroup.missing_directories()
    record["cgroup_dirs_leaf"] = cgroup.directories
    container.save()
    _make_exec_fifo(container.fifo_path, spec)

    plan = InitPlan(spec, container.id, container.bundle, record["rootfs"])
    plan.fifo_path = container.fifo_path
    plan.cgroup_dirs = cgroup.directories
    plan.cgroup_version = cgroup.version
    plan.no_pivot = options.no_pivot
    plan.keyring = not options.no_new_keyring
    plan.preserve_fds = options.preserve_fds
    plan.listen_fds = _listen_fds()
    plan.seccomp = seccomp
    plan.enclave = enclave
    if options.console_socket_fd >= 0:
        plan.console_socket_fd = options.console_socket_fd
    elif options.console_socket:
        from inclavare.runtime.console import connect_console_socket

        plan.console_socket_fd = connect_console_socket(options.console_socket)

    ours, theirs = SyncChannel.pair()
    # The container's init is a grandchild: as a subreaper, rune becomes its parent when the
    # first child exits, so that it can wait for it (`run`) or reap it after a failure.
    syscalls.prctl(PR_SET_CHILD_SUBREAPER, 1, what="become a subreaper")
    stage1 = os.fork()
    if stage1 == 0:
        ours.close()
        os.close(lock_fd)  # the lock is rune's: a child holding it would block `start`
        run_stage1(plan, theirs)
    theirs.close()
    if plan.console_socket_fd >= 0 and options.console_socket_fd < 0:
        os.close(plan.console_socket_fd)
    try:
        _follow_init(container, spec, cgroup, stage1, ours)
        # Limits apply from here: the init, a Python process, has finished setting up and
        # only waits for `start` (a small memory limit could have stopped its set-up).
        created = [(device.type, device.major, device.minor) for device in spec.linux.devices]
        apply_resources(cgroup.directories, resources, created)
    finally:
        ours.close()


def _creates(spec: Spec, kind: str) -> bool:
    namespace = spec.linux.namespace(kind)
    return namespace is not None and not namespace.path


def _follow_init(
    container: Container, spec: Spec, cgroup: Cgroup, stage1: int, channel: SyncChannel
) -> None:
    record = container.record
    # Creating and joining the cgroup may wait for the kernel (see cgroups.prime_migration):
    # the container's processes set up their namespaces and root filesystem meanwhile.
    cgroup.create()
    try:
        cgroup.add_process(stage1)
    except ProcessLookupError:
        pass  # it has already forked the init and exited; the init joins below
    if _creates(spec, "user"):
        channel.receive("userns")
        _write_id_map(stage1, "uid_map", spec.linux.uid_mappings)
        _write_id_map(stage1, "gid_map", spec.linux.gid_mappings)
        channel.send("idmapped")
    if _creates(spec, "cgroup"):
        channel.send("in-cgroup")
    message = channel.receive("child")
    os.waitpid(stage1, 0)
    pid = int(message["pid"])
    # The init may have been forked before its parent joined the cgroup: join it directly.
    cgroup.add_process(pid)
    stat = read_stat(pid)
    if stat is None:
        raise InclavareError("container init exited during set-up")
    record["pid"] = pid
    record["pid_start"] = stat[1]
    container.save()
    channel.send(
        "state",
        creating=container.hook_state(CREATING),
        started=container.hook_state(CREATED),
    )
    enclave_step = ""
    while True:
        try:
            message = channel.receive()
        except ContainerSetupError as error:
            if enclave_step and "without reporting why" in str(error):
                raise _enclave_crash(container, enclave_step, pid) from None
            raise
        if message["type"] == "ready":
            break
        if message["type"] == "enclave":
            enclave_step = str(message["step"])  # the init is about to call into the runtime
            continue
        if message["type"] != "hooks":
            raise InclavareError(f"container init sent {message['type']!r} unexpectedly")
        from inclavare.runtime.hooks import run_hooks

        state = container.hook_state(CREATING)
        run_hooks(spec.hooks["prestart"], "prestart", state)
        run_hooks(spec.hooks["createRuntime"], "createRuntime", state)
        channel.send("hooks-done")
    del record["phase"]
    container.save()


def _enclave_crash(container: Container, step: str, pid: int) -> InclavareError:
    """The error for an init that died inside the enclave runtime's `step`."""
    runtime = container.record.get("enclave", {}).get("runtime", "?")
    how = "exited"
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    else:
        if os.WIFSIGNALED(status):
            import signal

            number = os.WTERMSIG(status)
            try:
                how = f"was killed by {signal.Signals(number).name}"
            except ValueError:
                how = f"was killed by signal {number}"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)}"
    where = "while loading it" if step == "load" else f"in {step}"
    return InclavareError(f"enclave runtime {runtime} crashed {where}: the container init {how}")


def abandon(container: Container) -> None:
    """Remove every trace of a container whose creation failed or was interrupted."""
    record = container.record
    try:
        kill_all_and_wait(record.get("cgroup_dirs_leaf", []))
        remove_directories(record.get("cgroup_dirs", []), record.get("cgroup_dirs_leaf", []))
    except InclavareError as error:
        log.warning(str(error))
    remove_state_dir(container.state_dir)


def reap_children() -> None:
    """Collect exited children (rune is a subreaper: orphans of the container come to it)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_all_and_wait(cgroup_dirs: list[str], timeout: float = 10.0) -> None:
    """SIGKILL every process of the container until its cgroup is empty."""
    deadline = time.monotonic() + timeout
    while True:
        reap_children()
        if not processes_in(cgroup_dirs):
            return
        if time.monotonic() > deadline:
            raise InclavareError(f"processes in cgroup {cgroup_dirs[0]} do not exit")
        signal_all(cgroup_dirs, 9)
        time.sleep(0.002)


def remove_state_dir(state_dir: str) -> None:
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(state_dir)
    except FileNotFoundError:
        pass
