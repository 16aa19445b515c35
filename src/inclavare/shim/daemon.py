"""The shim's `start` action (start or reuse the group's shim, print its address) and the
serving shim (the `delete` action is in cleanup.py).

`start` forks the serving shim from itself, where containerd's runc shim re-executes its
binary: the child already has the interpreter and the modules loaded, which saves the
start-up of a second Python process on every container's critical path.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time

from inclavare.errors import InclavareError

SOCKET_DIRECTORY = "/run/containerd/s"
_PR_SET_CHILD_SUBREAPER = 36


class ShimError(InclavareError):
    pass


def group_id(bundle: str, container_id: str) -> str:
    """The shim's group: the pod's sandbox id for a CRI container, else the container."""
    from inclavare import lightjson

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as config:
            spec = lightjson.loads(config.read())
    except (OSError, ValueError):
        return container_id
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    if isinstance(annotations, dict):
        sandbox = annotations.get("io.kubernetes.cri.sandbox-id")
        if isinstance(sandbox, str) and sandbox:
            return sandbox
    return container_id


def socket_path(address: str, namespace: str, group: str) -> str:
    """As containerd's shims name theirs: a hash of containerd's address, namespace, group."""
    digest = hashlib.sha256(os.path.join(address, namespace, group).encode()).hexdigest()
    return os.path.join(SOCKET_DIRECTORY, digest)


def _reachable(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _write_file(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def start(namespace: str, address: str, publish_binary: str, container_id: str, debug: bool) -> int:
    bundle = os.getcwd()
    path = socket_path(address, namespace, group_id(bundle, container_id))
    uri = f"unix://{path}"
    if os.path.exists(path):
        if _reachable(path):
            _write_file(os.path.join(bundle, "address"), uri)
            sys.stdout.write(uri)
            return 0
        os.unlink(path)  # a shim that died left it
    os.makedirs(SOCKET_DIRECTORY, mode=0o711, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError as error:
        raise ShimError(f"listen on {path}: {error.strerror}") from None
    os.chmod(path, 0o600)
    listener.listen(64)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            code = serve(listener, namespace, address, publish_binary, bundle, debug)
        finally:
            os._exit(code)
    listener.close()
    _write_file(os.path.join(bundle, "shim.pid"), str(pid))
    _write_file(os.path.join(bundle, "address"), uri)
    sys.stdout.write(uri)
    return 0


class _Log:
    """Lines for containerd's log: the `log` fifo containerd opens in the bundle."""

    def __init__(self, bundle: str, debug: bool) -> None:
        self.debug = debug
        self.fd = -1
        try:
            self.fd = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            pass

    def __call__(self, message: str, level: str = "info") -> None:
        if self.fd < 0:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        quoted = message.replace("\\", "\\\\").replace('"', '\\"')
        line = f'time="{stamp}" level={level} msg="{quoted}" runtime=io.containerd.rune.v2\n'
        try:
            os.write(self.fd, line.encode())
        except OSError:
            pass  # nobody reads (containerd restarting): the line is dropped


def serve(
    listener: socket.socket,
    namespace: str,
    address: str,
    publish_binary: str,
    bundle: str,
    debug: bool,
) -> int:
    import signal

    from inclavare.linux import syscalls
    from inclavare.shim.events import Publisher
    from inclavare.shim.reaper import Reaper
    from inclavare.shim.service import SERVICE, TaskService
    from inclavare.shim.ttrpc_server import Server

    log = _Log(bundle, debug)
    # orphans of the containers (the init after `rune create` exits) become our children
    syscalls.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # the shim outlives the bundle's directory being the current one
    os.chdir("/")
    reaper = Reaper()
    publisher = Publisher(
        namespace, address, publish_binary, os.environ.get("TTRPC_ADDRESS", ""), log, reaper
    )
    server: Server

    def shutdown(*_args: object) -> None:
        server.close()

    service = TaskService(namespace, reaper, publisher, log, shutdown, debug)
    server = Server(service.handlers(), log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, shutdown)
    path = listener.getsockname()
    log(f"serving {SERVICE} on {path}")
    try:
        server.serve_forever(listener)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        publisher.close()
        log("shim exits")
    return 0
