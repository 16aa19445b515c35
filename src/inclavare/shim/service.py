"""containerd's Task service (containerd.task.v2.Task) for the containers of one shim.

One shim serves every container of a group (a Kubernetes pod: the CRI sandbox id), each with
its init process and its exec'd processes. Each call maps onto a `rune` command as the runc
shim maps it onto runc; exits come from the reaper and go to containerd as /tasks/exit events
and as the answers of pending Wait calls.

Where this differs from containerd's runc shim: no checkpoint/restore (Checkpoint answers
UNIMPLEMENTED), OOM events on cgroup v1 only, no shim cgroup (Options.shim_cgroup is
ignored), and the I/O's owner is always root (Options.io_uid/io_gid are ignored).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from inclavare.shim import carrier, messages, ttrpc
from inclavare.shim.bundle import ROOT_DIRECTORY, write_options
from inclavare.shim.events import Publisher
from inclavare.shim.mounts import mount_all, unmount_all
from inclavare.shim.oom import OomWatcher
from inclavare.shim.reaper import Reaper
from inclavare.shim.runtime import Runtime
from inclavare.shim.stdio import ProcessIO
from inclavare.shim.ttrpc_server import Handler, RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# containerd.v1.types.Status
UNKNOWN, CREATED, RUNNING, STOPPED, PAUSED = 0, 1, 2, 3, 4

RUNC_OPTIONS = "containerd.runc.v1.Options"
RUNTIME_OPTIONS = "runtimeoptions.v1.Options"
PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"
METRICS = "io.containerd.cgroups.v1.Metrics"
SERVICE = "containerd.task.v2.Task"


def valid_identifier(name: str) -> bool:
    """containerd's rule for ids: letters and digits, separated by single `.`, `_` or `-`,
    at most 76 characters. Exec ids become file names in the bundle."""
    if not name or len(name) > 76 or not name[0].isalnum() or not name[-1].isalnum():
        return False
    previous_separator = False
    for character in name:
        if character.isascii() and character.isalnum():
            previous_separator = False
        elif character in "._-" and not previous_separator:
            previous_separator = True
        else:
            return False
    return True


def _ended(message: str) -> bool:
    """Whether rune's kill failed because the container's process has already ended."""
    return any(
        reason in message
        for reason in ("container not running", "not running", "no such process", "not found")
    )


def _stamp(when: float | None) -> messages.Timestamp:
    """A Timestamp of when (seconds since the epoch), or an unset one."""
    return messages.Timestamp() if when is None else messages.Timestamp.at(int(when * 1e9))


class Process:
    def __init__(self, container: Container, exec_id: str, request: Any, spec: bytes = b"") -> None:
        self.container = container
        self.exec_id = exec_id
        self.stdin = str(request.stdin)
        self.stdout = str(request.stdout)
        self.stderr = str(request.stderr)
        self.terminal = bool(request.terminal)
        self.spec = spec
        self.pid = 0
        self.status = CREATED
        self.exit_status = 0
        self.exited_at: float | None = None
        self.exited = threading.Event()
        self.io: ProcessIO | None = None
        # an exit reaped while Start runs waits for the start event, so that containerd
        # sees /tasks/start before /tasks/exit
        self.starting = False
        self.pending_exit: int | None = None

    @property
    def id(self) -> str:
        """The process's id in events: the exec id, or the container's for its init."""
        return self.exec_id or self.container.id


class Container:
    def __init__(self, container_id: str, bundle: str, runtime: Runtime, options: dict[str, Any]):
        self.id = container_id
        self.bundle = bundle
        self.runtime = runtime
        self.options = options
        self.rootfs_mounted = False
        self.init: Process
        self.execs: dict[str, Process] = {}
        self.paused = False

    @property
    def rootfs(self) -> str:
        return os.path.join(self.bundle, "rootfs")


def runtime_options(type_url: str, value: bytes) -> dict[str, Any]:
    """BinaryName, Root, NoPivotRoot, NoNewKeyring of the container's runtime.

    containerd's CRI plugin sends containerd.runc.v1.Options only to the runc shims; for any
    other runtime_type it sends runtimeoptions.v1.Options{type_url=1, config_path=2}, whose
    ConfigPath names a TOML file: that file may set the same keys."""
    if type_url.endswith(RUNC_OPTIONS):
        parsed = messages.RuncOptions.FromString(value)
        return {
            "binary_name": str(parsed.binary_name),
            "root": str(parsed.root),
            "no_pivot_root": bool(parsed.no_pivot_root),
            "no_new_keyring": bool(parsed.no_new_keyring),
        }
    if type_url.endswith(RUNTIME_OPTIONS):
        config_path = ""
        for number, _, field in ttrpc.fields(value):
            if number == 2 and isinstance(field, bytes):
                config_path = field.decode(errors="replace")
        return _options_file(config_path) if config_path else {}
    return {}


def _options_file(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as config:
            table = tomllib.load(config)
    except OSError as error:
        raise RpcError(
            ttrpc.INVALID_ARGUMENT, f"runtime options {path}: {error.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise RpcError(ttrpc.INVALID_ARGUMENT, f"runtime options {path}: {error}") from None
    found: dict[str, Any] = {}
    for key, name, kind in (
        ("BinaryName", "binary_name", str),
        ("Root", "root", str),
        ("NoPivotRoot", "no_pivot_root", bool),
        ("NoNewKeyring", "no_new_keyring", bool),
        ("SigningKey", "signing_key", str),
        ("InclavareConfig", "inclavare_config", str),
    ):
        if key in table:
            if not isinstance(table[key], kind):
                raise RpcError(
                    ttrpc.INVALID_ARGUMENT,
                    f"runtime options {path}: {key} must be a {kind.__name__}",
                )
            found[name] = table[key]
    return found


class TaskService:
    def __init__(
        self,
        namespace: str,
        reaper: Reaper,
        publisher: Publisher,
        log: Callable[[str], None],
        on_shutdown: Callable[[], None],
        debug: bool = False,
    ) -> None:
        self.debug = debug
        self.namespace = namespace
        self.reaper = reaper
        self.publisher = publisher
        self.log = log
        self.on_shutdown = on_shutdown
        self.containers: dict[str, Container] = {}
        self.by_pid: dict[int, Process] = {}
        # Calls run in threads of their own and exits arrive from the reaper's: the lock
        # guards the tables and the processes' states. It is never held while rune runs
        # (the reaper needs it to report rune's own exit).
        self.lock = threading.RLock()
        self._creating: set[str] = set()
        reaper.on_exit = self._reaped
        self.oom = OomWatcher(self._oom, log)

    def busy(self) -> bool:
        """Whether a container lives here or is being created."""
        with self.lock:
            return bool(self.containers or self._creating)

    def handlers(self) -> dict[str, dict[str, Handler]]:
        methods: dict[str, Callable[[Any], Any]] = {
            "Create": self.create,
            "Start": self.start,
            "Delete": self.delete,
            "Exec": self.exec,
            "ResizePty": self.resize_pty,
            "State": self.state,
            "Pids": self.pids,
            "Pause": self.pause,
            "Resume": self.resume,
            "Kill": self.kill,
            "CloseIO": self.close_io,
            "Update": self.update,
            "Wait": self.wait,
            "Stats": self.stats,
            "Connect": self.connect,
            "Shutdown": self.shutdown,
        }
        requests = {
            "Create": "CreateTaskRequest",
            "Exec": "ExecProcessRequest",
            "ResizePty": "ResizePtyRequest",
            "Kill": "KillRequest",
            "CloseIO": "CloseIORequest",
            "Update": "UpdateTaskRequest",
        }
        return {
            SERVICE: {
                name: self._wrap(method, requests.get(name, f"{name}Request"))
                for name, method in methods.items()
            }
        }

    def _wrap(self, method: Callable[[Any], Any], request_type: str) -> Handler:
        def handler(payload: bytes) -> bytes:
            try:
                request = getattr(messages, request_type).FromString(payload)
            except ttrpc.DecodeError as error:
                raise RpcError(ttrpc.INVALID_ARGUMENT, f"{request_type}: {error}") from None
            started = time.monotonic()
            try:
                response = method(request)
            finally:
                if self.debug:
                    took = 1000 * (time.monotonic() - started)
                    self.log(f"{request_type}: {took:.1f} ms")
            if response is None:
                return b""  # google.protobuf.Empty
            return bytes(response.SerializeToString())

        return handler

    # --- lookups -----------------------------------------------------------------------------

    def _container(self, container_id: str) -> Container:
        container = self.containers.get(container_id)
        if container is None:
            raise RpcError(ttrpc.NOT_FOUND, f"container {container_id}: not found")
        return container

    def _process(self, container_id: str, exec_id: str) -> Process:
        container = self._container(container_id)
        if not exec_id:
            return container.init
        process = container.execs.get(exec_id)
        if process is None:
            raise RpcError(ttrpc.NOT_FOUND, f"process {exec_id} does not exist")
        return process

    def _publish(self, topic: str, name: str, **values: Any) -> None:
        message = messages.EVENTS[name]()
        for key, value in values.items():
            setattr(message, key, _stamp(value) if key == "exited_at" else value)
        self.publisher.publish(topic, f"containerd.events.{name}", message.SerializeToString())

    # --- exits -------------------------------------------------------------------------------

    def _reaped(self, pid: int, code: int) -> bool:
        with self.lock:
            process = self.by_pid.pop(pid, None)
            if process is None:
                return False
            self._exited(process, code)
            return True

    def _exited(self, process: Process, code: int) -> None:
        if process.status == STOPPED:
            return
        if process.starting:
            process.pending_exit = code
            return
        process.status = STOPPED
        process.exit_status = code
        process.exited_at = time.time()
        self._publish(
            "/tasks/exit",
            "TaskExit",
            container_id=process.container.id,
            id=process.id,
            pid=process.pid,
            exit_status=code,
            exited_at=process.exited_at,
        )
        process.exited.set()

    def _oom(self, container_id: str) -> None:
        self._publish("/tasks/oom", "TaskOOM", container_id=container_id)

    def _started(self, process: Process, pid: int) -> None:
        """pid is process's now: watch for its exit, which may already have happened."""
        with self.lock:
            process.pid = pid
            process.status = RUNNING if process.exec_id else process.status
            self.by_pid[pid] = process
            code = self.reaper.claimed(pid)
            if code is not None:
                self.by_pid.pop(pid, None)
                self._exited(process, code)

    # --- the calls ---------------------------------------------------------------------------

    def create(self, request: Any) -> Any:
        container_id = str(request.id)
        if not valid_identifier(container_id):
            raise RpcError(ttrpc.INVALID_ARGUMENT, f"invalid container id {container_id!r}")
        if request.checkpoint:
            raise RpcError(ttrpc.UNIMPLEMENTED, "restore from a checkpoint is not supported")
        with self.lock:
            if container_id in self.containers or container_id in self._creating:
                raise RpcError(ttrpc.ALREADY_EXISTS, f"container {container_id}: already exists")
            self._creating.add(container_id)
        try:
            return self._create(container_id, request)
        finally:
            with self.lock:
                self._creating.discard(container_id)

    def _create(self, container_id: str, request: Any) -> Any:
        bundle = str(request.bundle)
        options = runtime_options(request.options.type_url, request.options.value)
        root = options.get("root") or os.path.join(ROOT_DIRECTORY, self.namespace)
        runtime = Runtime(self.reaper, options.get("binary_name", ""), root, bundle)
        write_options(bundle, runtime.binary, root)
        container = Container(container_id, bundle, runtime, options)
        process = Process(container, "", request)
        container.init = process
        mounts = [(m.type, m.source, list(m.options)) for m in request.rootfs]
        try:
            if mounts:
                mount_all(mounts, container.rootfs)
                container.rootfs_mounted = True
            carrier_name = carrier.requested(_read_config(bundle))
            if carrier_name is not None:
                carrier.convert(
                    bundle,
                    carrier_name,
                    str(options.get("signing_key", "")),
                    str(options.get("inclavare_config", "")),
                    self.log,
                )
            process.io = ProcessIO(process.stdin, process.stdout, process.stderr, process.terminal)
            pid_file = os.path.join(bundle, "init.pid")
            runtime.create(
                container_id,
                pid_file,
                process.io.child_stdio,
                process.io.console_socket,
                bool(options.get("no_pivot_root")),
                bool(options.get("no_new_keyring")),
            )
            if process.terminal:
                process.io.receive_console()
            process.io.started()
            pid = _read_pid(pid_file)
        except BaseException as error:
            if process.io is not None:
                process.io.close()
            _quietly(lambda: runtime.delete(container_id, force=True))
            if container.rootfs_mounted:
                unmount_all(container.rootfs)
            if isinstance(error, OSError):
                raise RpcError(ttrpc.UNKNOWN, f"create {container_id}: {error}") from None
            raise
        event_io = messages.TaskIO(
            stdin=process.stdin,
            stdout=process.stdout,
            stderr=process.stderr,
            terminal=process.terminal,
        )
        created = messages.TaskCreate(
            container_id=container_id, bundle=bundle, io=event_io, pid=pid
        )
        created.rootfs.extend(request.rootfs)
        with self.lock:
            self.containers[container_id] = container
            self.publisher.publish(
                "/tasks/create", "containerd.events.TaskCreate", created.SerializeToString()
            )
            self._started(process, pid)
        self.oom.watch(container_id, pid)
        return messages.CreateTaskResponse(pid=pid)

    def start(self, request: Any) -> Any:
        with self.lock:
            process = self._process(request.id, request.exec_id)
            container = process.container
            if process.status != CREATED or process.starting:
                raise RpcError(ttrpc.FAILED_PRECONDITION, f"process {process.id} already started")
            if process.exec_id and container.init.status != RUNNING:
                raise RpcError(
                    ttrpc.FAILED_PRECONDITION, f"container {container.id} is not running"
                )
            process.starting = True
        if not process.exec_id:
            try:
                container.runtime.start(container.id)
                with self.lock:
                    process.status = RUNNING
                    self._publish(
                        "/tasks/start", "TaskStart", container_id=container.id, pid=process.pid
                    )
            finally:
                with self.lock:
                    process.starting = False
                    if process.pending_exit is not None:
                        self._exited(process, process.pending_exit)
            return messages.StartResponse(pid=process.pid)
        try:
            pid = self._start_exec(container, process)
        finally:
            with self.lock:
                process.starting = False
                if process.pending_exit is not None:
                    self._exited(process, process.pending_exit)
        return messages.StartResponse(pid=pid)

    def _start_exec(self, container: Container, process: Process) -> int:
        spec_file = os.path.join(container.bundle, f".exec-{process.exec_id}.json")
        pid_file = os.path.join(container.bundle, f".exec-{process.exec_id}.pid")
        try:
            process.io = ProcessIO(process.stdin, process.stdout, process.stderr, process.terminal)
            with open(spec_file, "wb") as spec:
                spec.write(process.spec)
            container.runtime.exec(
                container.id, spec_file, pid_file, process.io.child_stdio, process.io.console_socket
            )
            if process.terminal:
                process.io.receive_console()
            process.io.started()
            pid = _read_pid(pid_file)
        except BaseException as error:
            if process.io is not None:
                process.io.close()
                process.io = None
            if isinstance(error, OSError):
                raise RpcError(ttrpc.UNKNOWN, f"exec {process.exec_id}: {error}") from None
            raise
        finally:
            for path in (spec_file, pid_file):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        with self.lock:
            self._publish(
                "/tasks/exec-started",
                "TaskExecStarted",
                container_id=container.id,
                exec_id=process.exec_id,
                pid=pid,
            )
            self._started(process, pid)
        return pid

    def exec(self, request: Any) -> None:
        container = self._container(request.id)
        exec_id = str(request.exec_id)
        if not valid_identifier(exec_id):
            raise RpcError(ttrpc.INVALID_ARGUMENT, f"invalid exec id {exec_id!r}")
        if exec_id in container.execs:
            raise RpcError(ttrpc.ALREADY_EXISTS, f"id {exec_id}: already exists")
        if container.init.status == STOPPED:
            raise RpcError(ttrpc.FAILED_PRECONDITION, f"container {container.id} is stopped")
        process = Process(container, exec_id, request, bytes(request.spec.value))
        with self.lock:
            if exec_id in container.execs:
                raise RpcError(ttrpc.ALREADY_EXISTS, f"id {exec_id}: already exists")
            container.execs[exec_id] = process
            self._publish(
                "/tasks/exec-added", "TaskExecAdded", container_id=container.id, exec_id=exec_id
            )

    def delete(self, request: Any) -> Any:
        process = self._process(request.id, request.exec_id)
        container = process.container
        if process.exec_id:
            with self.lock:
                if process.status not in (CREATED, STOPPED) or process.starting:
                    raise RpcError(ttrpc.FAILED_PRECONDITION, f"process {process.id} is running")
                container.execs.pop(process.exec_id, None)
            _drain_and_close(process)
            return messages.DeleteResponse(
                pid=process.pid, exit_status=process.exit_status, **_exited_at(process)
            )
        with self.lock:
            if process.status in (RUNNING, PAUSED) or process.starting:
                raise RpcError(
                    ttrpc.FAILED_PRECONDITION, f"cannot delete a running container {container.id}"
                )
            never_started = process.status == CREATED
            if never_started:
                # rune delete --force kills it; its exit is reaped, not reported
                self.by_pid.pop(process.pid, None)
        container.runtime.delete(container.id, force=never_started)
        with self.lock:
            if never_started:
                process.status = STOPPED
                process.exit_status = 128 + signal.SIGKILL
                process.exited_at = time.time()
                process.exited.set()
            others = list(container.execs.values())
        for other in others:
            if other.io is not None:
                other.io.close()
        _drain_and_close(process)
        if container.rootfs_mounted:
            unmount_all(container.rootfs)
            container.rootfs_mounted = False
        self.oom.unwatch(container.id)
        with self.lock:
            self.containers.pop(container.id, None)
            self._publish(
                "/tasks/delete",
                "TaskDelete",
                container_id=container.id,
                pid=process.pid,
                exit_status=process.exit_status,
                exited_at=process.exited_at,
            )
        return messages.DeleteResponse(
            pid=process.pid, exit_status=process.exit_status, **_exited_at(process)
        )

    def state(self, request: Any) -> Any:
        process = self._process(request.id, request.exec_id)
        status = process.status
        if not process.exec_id and process.container.paused and status == RUNNING:
            status = PAUSED
        return messages.StateResponse(
            id=process.id,
            bundle=process.container.bundle,
            pid=process.pid,
            status=status,
            stdin=process.stdin,
            stdout=process.stdout,
            stderr=process.stderr,
            terminal=process.terminal,
            exit_status=process.exit_status,
            exec_id=process.exec_id,
            exited_at=_stamp(process.exited_at),
        )

    def pids(self, request: Any) -> Any:
        container = self._container(request.id)
        listed = container.runtime.ps(container.id)
        exec_ids = {p.pid: p.exec_id for p in container.execs.values() if p.pid}
        response = messages.PidsResponse()
        for pid in listed:
            info = messages.ProcessInfo(pid=pid)
            if pid in exec_ids:
                details = messages.ProcessDetails(exec_id=exec_ids[pid])
                info.info.type_url = PROCESS_DETAILS
                info.info.value = details.SerializeToString()
            response.processes.append(info)
        return response

    def pause(self, request: Any) -> None:
        container = self._container(request.id)
        container.runtime.pause(container.id)
        container.paused = True
        self._publish("/tasks/paused", "TaskPaused", container_id=container.id)

    def resume(self, request: Any) -> None:
        container = self._container(request.id)
        container.runtime.resume(container.id)
        container.paused = False
        self._publish("/tasks/resumed", "TaskResumed", container_id=container.id)

    def kill(self, request: Any) -> None:
        process = self._process(request.id, request.exec_id)
        if not process.exec_id:
            # As containerd's runc shim: killing what has already ended is NOT_FOUND, which
            # the CRI plugin takes as done (anything else makes it retry the stop forever).
            if process.status == STOPPED:
                raise RpcError(ttrpc.NOT_FOUND, "process already finished")
            try:
                process.container.runtime.kill(process.container.id, request.signal, request.all)
            except RpcError as error:
                if process.status == STOPPED or _ended(str(error)):
                    raise RpcError(ttrpc.NOT_FOUND, "process already finished") from None
                raise
            return
        if process.status != RUNNING or not process.pid:
            raise RpcError(ttrpc.NOT_FOUND, "process already finished")
        try:
            os.kill(process.pid, request.signal)
        except ProcessLookupError:
            raise RpcError(ttrpc.NOT_FOUND, "process already finished") from None

    def close_io(self, request: Any) -> None:
        process = self._process(request.id, request.exec_id)
        if request.stdin and process.io is not None:
            process.io.close_stdin()

    def resize_pty(self, request: Any) -> None:
        process = self._process(request.id, request.exec_id)
        if process.io is None or process.io.master < 0:
            raise RpcError(ttrpc.FAILED_PRECONDITION, f"process {process.id} has no terminal")
        process.io.resize(request.width, request.height)

    def update(self, request: Any) -> None:
        container = self._container(request.id)
        container.runtime.update(container.id, bytes(request.resources.value))

    def wait(self, request: Any) -> Any:
        process = self._process(request.id, request.exec_id)
        process.exited.wait()
        return messages.WaitResponse(
            exit_status=process.exit_status, exited_at=_stamp(process.exited_at)
        )

    def stats(self, request: Any) -> Any:
        from inclavare.shim.metrics import metrics_v1

        container = self._container(request.id)
        data = container.runtime.stats(container.id)
        response = messages.StatsResponse()
        response.stats.type_url = METRICS
        response.stats.value = metrics_v1(data)
        return response

    def connect(self, request: Any) -> Any:
        container = self.containers.get(request.id)
        task_pid = container.init.pid if container is not None else 0
        return messages.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid)

    def shutdown(self, request: Any) -> None:
        if self.containers and not request.now:
            return  # other containers of the group still run here
        self.on_shutdown()


def _drain_and_close(process: Process) -> None:
    """Close the process's I/O once everything it wrote reached the fifos: containerd's
    client stops reading when Delete returns. A descendant that still holds the output
    open (a daemon started by the process) is not waited for beyond a few seconds."""
    if process.io is None:
        return
    process.io.wait_outputs(3.0)
    process.io.close()
    process.io = None


def _exited_at(process: Process) -> dict[str, Any]:
    return {"exited_at": _stamp(process.exited_at)}


def _read_config(bundle: str) -> dict[str, Any]:
    from inclavare import lightjson

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as config:
            found = lightjson.loads(config.read())
    except (OSError, ValueError) as error:
        raise RpcError(ttrpc.INVALID_ARGUMENT, f"{bundle}/config.json: {error}") from None
    return found if isinstance(found, dict) else {}


def _read_pid(path: str) -> int:
    with open(path) as pid_file:
        return int(pid_file.read().strip())


def _quietly(call: Callable[[], None]) -> None:
    try:
        call()
    except RpcError:
        pass
