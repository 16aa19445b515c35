"""init-runelet: what the init process of an enclave container does instead of execve().

rune's container init (runtime/init.py) calls it at two moments:

`Runelet.prepare`, during create, while the host's file system is still visible (before
pivot_root): load the enclave runtime (a PAL shared object from its host path, or a built-in
runtime), call its init with the runtime arguments and the launch record of the enclave rune
launched, and bind the agent socket in the container's state directory. A PAL whose pal_init
fails makes create fail with its reason; one that crashes kills the init, and rune reports
the crash (the init tells rune each PAL entry point it is about to call).

`Runelet.serve`, once the init has become the container's process: the init never
execve()s the entrypoint. It waits for `rune start` on exec.fifo (in a thread, so that the
agent answers `rune attest` and `rune exec` in the meantime), starts the entrypoint through
the runtime's create_process, tells `start` "0" or the reason it failed, and waits for the
entrypoint through the runtime's exec: its exit status becomes the init's, so the
container's. Meanwhile the main thread

- serves the agent socket (protocol: enclave/agent.py): each `exec` starts a process with the
  caller's argv, env and descriptors, in a thread that waits for it and reports its exit
  status; `signal` goes to that process through the runtime's kill; `report` asks the
  runtime for a local report; `info` describes the enclave;
- passes signals sent to the init (`rune kill`) to the entrypoint through the runtime's kill;
- reaps orphans re-parented to the init, and only them: processes the runtime started are
  children of the worker threads, which wait for them, and the main thread waits with
  __WNOTHREAD.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from inclavare.enclave import agent
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.enclave.config import EnclaveConfig
    from inclavare.enclave.runtime import EnclaveRuntime
    from inclavare.tee.sim.measurement import Manifest

WNOTHREAD = 0x20000000  # wait for children of the calling thread only
MAX_FDS_PER_MESSAGE = 16
# Signals the init keeps for itself, cannot catch, or gets for its own faults.
_NOT_FORWARDED = {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGCHLD,
    signal.SIGPIPE,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGABRT,
}


class EnclavePlan:
    """What rune decided at create for the enclave of a container (runtime/enclave.py)."""

    __slots__ = ("config", "description", "entrypoint", "launch_record", "manifest", "state_dir")

    def __init__(
        self,
        config: EnclaveConfig,
        entrypoint: str,
        state_dir: str,
        description: dict[str, object],
        manifest: Manifest | None = None,
        launch_record: bytes | None = None,
    ) -> None:
        self.config = config
        self.entrypoint = entrypoint  # the program's path inside the container
        self.state_dir = state_dir  # where agent.sock goes (a host path)
        self.description = description  # what `info` answers
        self.manifest = manifest
        self.launch_record = launch_record


class Runelet:
    def __init__(self, plan: EnclavePlan) -> None:
        self.plan = plan
        self.runtime: EnclaveRuntime | None = None
        self.listener: socket.socket | None = None
        self.entry_pid: int | None = None
        self._events: queue.SimpleQueue[tuple[object, ...]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._connections: dict[socket.socket, _Client] = {}
        self._selector: selectors.BaseSelector | None = None

    # --- create: before pivot_root ---------------------------------------------------------

    def prepare(self, step: Callable[[str], None]) -> None:
        """Load and initialise the runtime and bind the agent socket. `step(name)` is called
        before each runtime entry point, so that a crash can be attributed."""
        from inclavare.enclave.runtimes import load_runtime

        config = self.plan.config
        step("load")
        runtime = load_runtime(config.runtime_path, self.plan.manifest)
        step("pal_init")
        runtime.init(config.args_text, config.log_level, self.plan.launch_record)
        self.runtime = runtime
        self.listener = _listen(self.plan.state_dir)

    # --- after start: the init's life -------------------------------------------------------

    def serve(
        self,
        fifo_path: str,
        on_start: Callable[[], None],
        argv: Sequence[str],
        env: Sequence[str],
    ) -> NoReturn:
        """Wait for start, run the entrypoint and serve the agent until it ends; exit with
        its status."""
        assert self.listener is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._install_signal_handlers()
        threading.Thread(
            target=self._run_entrypoint,
            args=(fifo_path, on_start, list(argv), list(env)),
            daemon=True,
        ).start()
        while True:
            for key, _ in self._selector.select():
                if key.data == "listener":
                    self._accept()
                elif key.data == "wake":
                    self._drain_events()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _install_signal_handlers(self) -> None:
        for number in range(1, signal.NSIG):
            if number in _NOT_FORWARDED:
                continue
            try:
                signal.signal(number, self._forward_signal)
            except (OSError, ValueError):
                pass  # signals the C library reserves
        signal.signal(signal.SIGCHLD, self._reap_orphans)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a caller that went away is no reason to die

    def _forward_signal(self, number: int, frame: object) -> None:
        runtime, pid = self.runtime, self.entry_pid
        if runtime is None or pid is None:
            return  # not started: like any pid 1 without a handler, ignore it
        try:
            runtime.kill(pid, number)
        except InclavareError as error:
            _say(f"cannot pass signal {number} to the enclave's entrypoint: {error}")

    def _reap_orphans(self, number: int, frame: object) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG | WNOTHREAD)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _post(self, *event: object) -> None:
        self._events.put(event)
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    # --- the entrypoint ----------------------------------------------------------------------

    def _run_entrypoint(
        self, fifo_path: str, on_start: Callable[[], None], argv: list[str], env: list[str]
    ) -> None:
        runtime = self.runtime
        assert runtime is not None
        try:
            fifo = os.open(fifo_path, os.O_WRONLY | os.O_CLOEXEC)  # until `start` reads it
        except OSError as error:
            _say(f"container init cannot open exec.fifo: {error.strerror}")
            self._post("entry-ended", 1)
            return
        try:
            on_start()
            pid = runtime.create_process(self.plan.entrypoint, argv, env, (-1, -1, -1))
        except BaseException as error:
            try:
                os.write(fifo, _describe(error).encode(errors="replace")[:4000])
            except OSError:
                pass
            os.close(fifo)
            self._post("entry-ended", 1)
            return
        self.entry_pid = pid
        os.write(fifo, b"0")
        os.close(fifo)
        try:
            code = runtime.exec(pid)
        except InclavareError as error:
            _say(f"the enclave's entrypoint: {error}")
            code = 1
        self._post("entry-ended", code)

    def _finish(self, code: int) -> NoReturn:
        runtime = self.runtime
        if runtime is not None:
            try:
                runtime.destroy()
            except InclavareError as error:
                _say(str(error))
        os._exit(code & 0xFF)

    # --- the agent ---------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None and self._selector is not None
        try:
            connection, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        connection.setblocking(True)
        self._connections[connection] = _Client(connection)
        self._selector.register(connection, selectors.EVENT_READ, "client")

    def _drop(self, client: _Client) -> None:
        assert self._selector is not None
        if self._connections.pop(client.sock, None) is None:
            return
        self._selector.unregister(client.sock)
        client.close()

    def _read(self, sock: socket.socket) -> None:
        client = self._connections[sock]
        try:
            data, fds = _receive(sock)
            messages = client.protocol.receive_data(data, fds)
        except (OSError, agent.AgentProtocolError):
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        for message in messages:
            try:
                self._handle(client, message)
            except Exception as error:  # one request's failure is not the container's
                client.send(agent.Error(_describe(error)))

    def _handle(self, client: _Client, message: agent.Message) -> None:
        runtime = self.runtime
        assert runtime is not None
        if isinstance(message, agent.Exec):
            threading.Thread(target=self._run_exec, args=(client, message), daemon=True).start()
        elif isinstance(message, agent.Signal):
            try:
                assert client.pid is not None
                runtime.kill(client.pid, message.signal)
            except InclavareError as error:
                client.send(agent.Error(str(error)))
        elif isinstance(message, agent.ReportRequest):
            try:
                report = runtime.get_local_report(message.target_info, message.report_data)
            except InclavareError as error:
                client.send(agent.Error(str(error)))
            else:
                client.send(agent.Report(report))
        elif isinstance(message, agent.InfoRequest):
            description = dict(self.plan.description)
            description["api_version"] = runtime.api_version
            description["started"] = self.entry_pid is not None
            client.send(agent.Info(description))

    def _run_exec(self, client: _Client, request: agent.Exec) -> None:
        runtime = self.runtime
        assert runtime is not None
        # Version 1 of the PAL API starts the process in pal_exec: the caller's descriptors
        # are needed until then. Otherwise they are closed once the process has its copies.
        late = runtime.api_version == 1
        try:
            path = _look_path(request.argv[0], request.env)
            stdio = request.fds
            if not stdio:
                raise InclavareError("exec without standard input, output and error")
            pid = runtime.create_process(path, request.argv, request.env, stdio)
        except BaseException as error:
            _close(request.fds)
            self._post("exec-failed", client, _describe(error))
            return
        if not late:
            _close(request.fds)
        self._post("exec-started", client, pid)
        try:
            code = runtime.exec(pid)
        except InclavareError as error:
            _say(f"process {pid}: {error}")
            code = 255
        if late:
            _close(request.fds)
        self._post("exec-ended", client, code)

    def _drain_events(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            kind = event[0]
            if kind == "entry-ended":
                assert isinstance(event[1], int)
                self._finish(event[1])
            client = event[1]
            assert isinstance(client, _Client)
            if client.sock not in self._connections:
                continue  # the caller went away (a detached exec): nothing to tell
            if kind == "exec-started":
                assert isinstance(event[2], int)
                client.pid = event[2]
                client.send(agent.Started(event[2]))
            elif kind == "exec-failed":
                client.send(agent.Error(str(event[2])))
            elif kind == "exec-ended":
                assert isinstance(event[2], int)
                client.send(agent.Exited(event[2]))
                self._drop(client)


class _Client:
    """A connection to the agent socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.protocol = agent.Connection(agent.AGENT)
        self.pid: int | None = None

    def send(self, message: agent.Message) -> None:
        try:
            self.sock.sendall(self.protocol.send(message), socket.MSG_NOSIGNAL)
        except (OSError, agent.AgentProtocolError):
            pass  # the caller went away; its process goes on

    def close(self) -> None:
        for fd in self.protocol.pending_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.protocol.pending_fds = []
        self.sock.close()


def _listen(state_dir: str) -> socket.socket:
    """The agent socket, bound in the state directory through a descriptor of it: the path
    of a Unix socket is limited to 107 bytes, and state directories can be longer."""
    directory = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        path = f"/proc/self/fd/{directory}/{agent.SOCKET_NAME}"
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        sock.listen(16)
        sock.setblocking(False)
        return sock
    finally:
        os.close(directory)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Bytes and the descriptors that came with them (close-on-exec)."""
    import array

    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(
        65536, socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _look_path(program: str, env: Sequence[str]) -> str:
    """The path of `program` in the container, searched in the PATH of `env` like execvp."""
    if "/" in program:
        return program
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for entry in env:
        if entry.startswith("PATH="):
            search = entry[5:]
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate):
            return candidate
    raise InclavareError(f'exec: "{program}": executable file not found in $PATH')


def _describe(error: BaseException) -> str:
    if isinstance(error, InclavareError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return f"internal error in the init-runelet: {type(error).__name__}: {error}"


def _say(message: str) -> None:
    """A line on the container's standard error (the init has no other place to report)."""
    try:
        os.write(2, f"rune init-runelet: {message}\n".encode(errors="replace"))
    except OSError:
        pass
