"""The container's side of `create`: from a forked rune to the user program.

rune forks twice, as runc does:

  stage 1 (the first child) joins the namespaces given by path, creates the user namespace and
  waits for rune to write its id mappings, then creates every other new namespace. A new pid
  or time namespace only applies to children, so it forks:

  stage 2 (the container's init, pid 1 of its pid namespace) prepares the root filesystem,
  asks rune to run the prestart/createRuntime hooks, runs createContainer hooks, enters the
  rootfs, and reports "ready". It then blocks opening exec.fifo for writing, which `start`
  opens for reading. Once started it runs startContainer hooks, switches to the container's
  user and capabilities, and executes the program. The fifo is close-on-exec: `start` reads
  either an error message or, when execve succeeded, end-of-file.

Both stages end with os._exit and never return into rune's code.
"""

from __future__ import annotations

import os

from inclavare.linux import syscalls
from inclavare.linux.constants import CLONE_NEWCGROUP, CLONE_NEWUSER, NAMESPACES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.enclave.runelet import EnclavePlan, Runelet
    from inclavare.linux.seccomp import SeccompFilter, SeccompProfile
    from inclavare.oci.spec import Spec
    from inclavare.runtime.sync import SyncChannel


class InitPlan:
    """What the container process needs to know, decided by rune before forking."""

    __slots__ = (
        "bundle",
        "cgroup_dirs",
        "cgroup_version",
        "console_socket_fd",
        "container_id",
        "enclave",
        "fifo_path",
        "keyring",
        "listen_fds",
        "no_pivot",
        "preserve_fds",
        "rootfs",
        "runelet",
        "seccomp",
        "seccomp_filter",
        "spec",
        "started_state",
    )

    def __init__(self, spec: Spec, container_id: str, bundle: str, rootfs: str) -> None:
        self.spec = spec
        self.container_id = container_id
        self.bundle = bundle
        self.rootfs = rootfs
        self.fifo_path = ""
        self.cgroup_dirs: list[str] = []
        self.cgroup_version = 1
        self.console_socket_fd = -1
        self.no_pivot = False
        self.keyring = True
        self.preserve_fds = 0
        self.listen_fds = 0
        self.started_state = ""
        self.seccomp: SeccompProfile | None = None
        self.seccomp_filter: SeccompFilter | None = None
        # An enclave container: its init becomes the init-runelet (enclave/runelet.py).
        self.enclave: EnclavePlan | None = None
        self.runelet: Runelet | None = None

    def namespaces_to_join(self) -> list[tuple[str, str]]:
        """(type, path) of existing namespaces, the user namespace first."""
        joined = [(ns.type, ns.path) for ns in self.spec.linux.namespaces if ns.path]
        joined.sort(key=lambda item: item[0] != "user")
        return joined

    def new_namespace_flags(self) -> int:
        flags = 0
        for namespace in self.spec.linux.namespaces:
            if not namespace.path:
                flags |= NAMESPACES[namespace.type][0]
        return flags

    def creates_namespace(self, kind: str) -> bool:
        namespace = self.spec.linux.namespace(kind)
        return namespace is not None and not namespace.path


def describe(error: BaseException) -> str:
    """One line for an error raised while setting up the container."""
    from inclavare.errors import InclavareError

    if isinstance(error, InclavareError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        if error.filename:
            return f"{error.filename}: {error.strerror}"
        return error.strerror
    return f"internal error in container init: {type(error).__name__}: {error}"


def _fail(channel: SyncChannel, error: BaseException) -> None:
    try:
        channel.send("error", message=describe(error))
    except OSError:
        pass


def run_stage1(plan: InitPlan, channel: SyncChannel) -> None:
    """The first child of rune. Never returns."""
    try:
        for kind, path in plan.namespaces_to_join():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns(fd, NAMESPACES[kind][0], what=f"{kind} namespace {path}")
            finally:
                os.close(fd)
        flags = plan.new_namespace_flags()
        if flags & CLONE_NEWUSER:
            syscalls.unshare(CLONE_NEWUSER)
            channel.send("userns")
            channel.receive("idmapped")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            flags &= ~CLONE_NEWUSER
        if flags & CLONE_NEWCGROUP:
            # A cgroup namespace is rooted at the cgroup of its creator: be in it first.
            channel.receive("in-cgroup")
        if flags:
            syscalls.unshare(flags)
        if plan.spec.linux.time_offsets:
            _write_time_offsets(plan.spec.linux.time_offsets)
        pid = os.fork()
        if pid == 0:
            run_stage2(plan, channel)
        channel.send("child", pid=pid)
        os._exit(0)
    except BaseException as error:
        _fail(channel, error)
        os._exit(1)


def _write_time_offsets(offsets: dict[str, tuple[int, int]]) -> None:
    lines = "".join(f"{clock} {secs} {nanosecs}\n" for clock, (secs, nanosecs) in offsets.items())
    fd = os.open("/proc/self/timens_offsets", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, lines.encode())
    finally:
        os.close(fd)


def _bring_loopback_up() -> None:
    import _socket
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), siocgifflags, request))[1]
        fcntl.ioctl(sock.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    finally:
        sock.close()


def run_stage2(plan: InitPlan, channel: SyncChannel) -> None:
    """The container's init process. Never returns."""
    try:
        # Python ignores SIGPIPE and SIGXFSZ and rune's caller may have ignored others; an
        # ignored signal stays ignored across execve.
        syscalls.reset_signals()
        program, env = _prepare_container(plan, channel)
    except BaseException as error:
        _fail(channel, error)
        os._exit(1)
    channel.close()
    if plan.runelet is not None:
        _serve_enclave(plan, plan.runelet, env)
    try:
        # Blocks until `start` opens the fifo for reading.
        fifo = os.open(plan.fifo_path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as error:  # nobody to tell but the container's own standard error
        os.write(2, f"rune: container init cannot open exec.fifo: {error.strerror}\n".encode())
        os._exit(1)
    try:
        from inclavare.runtime import hooks

        hooks.run_hooks(plan.spec.hooks["startContainer"], "startContainer", plan.started_state)
        # "0" tells `start` that everything up to execve worked; the fifo closes on execve.
        os.write(fifo, b"0")
        process = plan.spec.process
        assert process is not None
        if plan.seccomp_filter is not None and process.no_new_privileges:
            plan.seccomp_filter.load()  # as late as possible: see process.become
        os.execve(program, process.args, env)
    except BaseException as error:
        try:
            os.write(fifo, describe(error).encode(errors="replace")[:4000])
        except OSError:
            pass
    os._exit(1)


def _serve_enclave(plan: InitPlan, runelet: Runelet, env: dict[str, str]) -> None:
    """The enclave container's init never executes the program: the init-runelet runs it
    through the enclave runtime once started, and lives as long as it does. Never returns."""
    from inclavare.runtime import hooks

    process = plan.spec.process
    assert process is not None
    try:
        if plan.seccomp_filter is not None and process.no_new_privileges:
            plan.seccomp_filter.load()  # before the runelet starts any thread

        def on_start() -> None:
            hooks.run_hooks(plan.spec.hooks["startContainer"], "startContainer", plan.started_state)

        runelet.serve(plan.fifo_path, on_start, process.args, [f"{k}={v}" for k, v in env.items()])
    except BaseException as error:
        os.write(2, f"rune: enclave container init: {describe(error)}\n".encode(errors="replace"))
    os._exit(1)


class _States:
    """The OCI state documents, which rune sends once the container's cgroup exists and the
    init is in it; received when first needed, so that set-up does not wait for them."""

    def __init__(self, channel: SyncChannel) -> None:
        self.channel = channel
        self.received: dict[str, str] | None = None

    def get(self) -> dict[str, str]:
        if self.received is None:
            self.received = self.channel.receive("state")
        return self.received


def _prepare_container(plan: InitPlan, channel: SyncChannel) -> tuple[str, dict[str, str]]:
    """Everything of `create` that happens inside the container; returns what to execute."""
    from inclavare.runtime import hooks, rootfs

    spec = plan.spec
    states = _States(channel)
    os.setsid()
    os.umask(0o022)
    if plan.creates_namespace("network"):
        _bring_loopback_up()
    rootfs.prepare_rootfs(
        spec,
        plan.rootfs,
        plan.bundle,
        plan.cgroup_dirs,
        plan.cgroup_version,
        in_user_namespace=spec.linux.namespace("user") is not None,
        wait_for_cgroup=states.get,
    )
    if spec.hooks["prestart"] or spec.hooks["createRuntime"]:
        states.get()
        channel.send("hooks")
        channel.receive("hooks-done")
    if spec.hooks["createContainer"]:
        hooks.run_hooks(spec.hooks["createContainer"], "createContainer", states.get()["creating"])
    if plan.enclave is not None:
        plan.runelet = _prepare_enclave(plan.enclave, channel, states)
    # The fifo is reached through a descriptor opened before the host's root disappears.
    fifo_dir = os.open(os.path.dirname(plan.fifo_path), os.O_PATH | os.O_CLOEXEC)
    plan.fifo_path = f"/proc/self/fd/{fifo_dir}/{os.path.basename(plan.fifo_path)}"
    assert spec.process is not None
    rootfs.make_directory(plan.rootfs, spec.process.cwd)  # before / may become read-only
    _import_what_runs_inside(spec)
    if plan.seccomp is not None:
        from inclavare.linux.seccomp import build_filter

        plan.seccomp_filter = build_filter(plan.seccomp)  # libseccomp is the host's
    rootfs.enter_rootfs(plan.rootfs, plan.no_pivot)
    if spec.process is not None and spec.process.terminal:
        from inclavare.runtime.console import setup_container_terminal

        setup_container_terminal(
            plan.console_socket_fd, spec.process.console_size, bind_console=True
        )
    if spec.hostname:
        syscalls.sethostname(spec.hostname)
    if spec.domainname:
        syscalls.setdomainname(spec.domainname)
    rootfs.write_sysctls(spec.linux.sysctl)
    rootfs.make_paths_readonly(spec.linux.readonly_paths)
    rootfs.mask_paths(spec.linux.masked_paths)
    if spec.root.readonly:
        rootfs.make_root_readonly()
    rootfs.finish_root_propagation(spec)
    program, env = _become_the_process(plan)
    plan.started_state = states.get()["started"]
    channel.send("ready")
    return program, env


def _prepare_enclave(enclave: EnclavePlan, channel: SyncChannel, states: _States) -> Runelet:
    """Load the enclave runtime from the host and initialise it (before pivot_root). rune
    hears of each runtime entry point before it is called, to name it if the init dies."""
    from inclavare.enclave.runelet import Runelet

    states.get()  # from here on rune reads what the init sends

    def step(name: str) -> None:
        channel.send("enclave", step=name)

    runelet = Runelet(enclave)
    runelet.prepare(step)
    return runelet


def _import_what_runs_inside(spec: Spec) -> None:
    """Import now every module used after pivot_root: from then on, the host's Python
    library is out of reach, and only modules already in sys.modules can be used."""
    import inclavare.linux.proc
    import inclavare.runtime.process

    if spec.hooks["startContainer"]:
        import subprocess  # noqa: F401
    if spec.process is not None and spec.process.terminal:
        import inclavare.runtime.console  # noqa: F401


def _become_the_process(plan: InitPlan) -> tuple[str, dict[str, str]]:
    """Take on the process's limits, identity and capabilities, as runc does before waiting
    for `start`; return the program to execute and its environment."""
    from inclavare.runtime.process import become

    process = plan.spec.process
    assert process is not None
    return become(
        process,
        keyring=plan.container_id if plan.keyring else None,
        preserve_fds=plan.preserve_fds,
        listen_fds=plan.listen_fds,
        seccomp=plan.seccomp_filter,
        # an enclave's program is run by its runtime: a wasm module need not be executable
        executable=plan.enclave is None,
    )
