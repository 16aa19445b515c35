"""What the built-in enclave runtimes share: trusted files, enclave processes, local reports.

An enclave process is a child of the init-runelet. Before forking it the runtime checks,
as the launch check did at create, that every trusted file of the signed manifest still
has its signed digest, and that the program's content is one of the trusted files (the
same bytes under another name, such as a busybox applet, are the same measured code). The
child reports through a close-on-exec pipe why it could not start; the parent reads that
pipe until it closes, so `create_process` fails with the reason instead of returning a
process that died at once.

Process ids are those of the init-runelet's pid namespace. `kill` signals only processes
this runtime started and has not waited for.

A runtime whose programs can use descriptors (builtin:native) gives each process an
attestation channel (tee/sim/channel.py): the process asks, the runtime answers with a quote
of this enclave made by the sim platform's quoting enclave, which the runtime loaded at init
(before pivot_root, as the platform lives on the host).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Sequence

from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.tee.sim import channel as channel_module
from inclavare.tee.sim.errors import LaunchRefused
from inclavare.tee.sim.files import TrustedFileError, digest_or_none
from inclavare.tee.sim.launch import parse_launch_record
from inclavare.tee.sim.measurement import Manifest, normalise_path
from inclavare.tee.sim.quote import QE_TARGET_INFO
from inclavare.tee.sim.reports import create_report
from inclavare.tee.sim.sgx import TargetInfo, pad_report_data

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.enclave.runtime import Stdio
    from inclavare.tee.sim.keys import ReportKeys
    from inclavare.tee.sim.platform import SimPlatform
    from inclavare.tee.sim.sgx import EnclaveIdentity


class EnclaveRuntimeError(InclavareError):
    """A built-in runtime cannot do what it was asked."""


def parse_runtime_args(name: str, args: str, known: Sequence[str]) -> list[tuple[str, str]]:
    """ENCLAVE_RUNTIME_ARGS ("debug,dir=/data") as (key, value) pairs, keys among `known`."""
    pairs = []
    for item in args.split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in known:
            raise EnclaveRuntimeError(
                f"{name}: unknown runtime argument {item!r} (known: {', '.join(known)})"
            )
        pairs.append((key, value))
    return pairs


class BuiltinRuntime:
    """The shared part of builtin:native and builtin:wasm; subclasses say how a verified
    program is prepared (`_prepare`, in the parent) and run (`_run`, in the child)."""

    name = "builtin"
    ARGUMENTS: tuple[str, ...] = ("debug",)
    # Whether processes get an attestation channel (their programs can use a descriptor).
    gives_attestation_channel = False

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.debug = False
        self._identity: EnclaveIdentity | None = None
        self._keys: ReportKeys | None = None
        self._processes: set[int] = set()
        self._lock = threading.Lock()
        self._platform: SimPlatform | None = None

    @property
    def api_version(self) -> int:
        return 3

    # --- the EnclaveRuntime operations ----------------------------------------------------

    def init(self, args: str, log_level: str, launch_record: bytes | None = None) -> None:
        if launch_record is None:
            raise EnclaveRuntimeError(f"{self.name}: runs only an enclave the sim TEE launched")
        identity, keys = parse_launch_record(launch_record)
        if identity.mr_enclave != self.manifest.mr_enclave:
            raise EnclaveRuntimeError(
                f"{self.name}: the launch record is not for the enclave of this manifest"
            )
        self._identity, self._keys = identity, keys
        # Make one report now: what reports need is imported while the host's Python
        # library is reachable (the container's root replaces it later).
        create_report(keys, identity, TargetInfo.of(identity))
        if self.gives_attestation_channel:
            self._load_platform()
        self.debug = log_level in ("trace", "debug")
        self._configure(parse_runtime_args(self.name, args, self.ARGUMENTS))

    def create_process(
        self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Stdio
    ) -> int:
        if self._identity is None:
            raise EnclaveRuntimeError(f"{self.name}: create_process before init")
        content = self.verify_program(path)
        prepared = self._prepare(path, content)
        channel = ours = None
        if self._platform is not None:
            ours, channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            env = [*env, f"{channel_module.ENVIRONMENT_VARIABLE}={channel.fileno()}"]
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            os.close(report_read)
            os.close(report_write)
            _close_sockets(ours, channel)
            raise
        if pid == 0:  # pragma: no cover - the child ends in execve or os._exit
            os.close(report_read)
            if channel is not None:
                os.set_inheritable(channel.fileno(), True)
            self._child(prepared, list(argv), list(env), stdio, report_write)
        os.close(report_write)
        _close_sockets(channel)
        try:
            reason = _read_all(report_read)
        finally:
            os.close(report_read)
            self._release(prepared)
        if reason:
            _close_sockets(ours)
            _wait(pid)
            raise EnclaveRuntimeError(
                f"{self.name}: cannot start {path}: {reason.decode(errors='replace')}"
            )
        with self._lock:
            self._processes.add(pid)
        if ours is not None:
            threading.Thread(target=self._answer_channel, args=(ours,), daemon=True).start()
        return pid

    def exec(self, pid: int) -> int:
        with self._lock:
            if pid not in self._processes:
                raise EnclaveRuntimeError(f"{self.name}: no enclave process {pid} to wait for")
        try:
            return _wait(pid)
        finally:
            with self._lock:
                self._processes.discard(pid)

    def kill(self, pid: int, signal: int) -> None:
        with self._lock:
            if pid not in self._processes:
                raise EnclaveRuntimeError(f"{self.name}: no enclave process {pid}")
            try:
                os.kill(pid, signal)
            except ProcessLookupError:
                pass  # it has just exited and is not yet waited for

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        if self._identity is None or self._keys is None:
            raise EnclaveRuntimeError(f"{self.name}: get_local_report before init")
        try:
            target = TargetInfo.parse(target_info)
            data = pad_report_data(report_data)
        except InclavareError as error:
            raise EnclaveRuntimeError(f"{self.name}: get_local_report: {error}") from None
        return create_report(self._keys, self._identity, target, data)

    def destroy(self) -> None:
        with self._lock:
            for pid in self._processes:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        self._keys = None

    # --- the attestation channel -----------------------------------------------------------

    def _load_platform(self) -> None:
        from inclavare.tee.sim.store import load_platform

        try:
            platform = load_platform()
            # One quote now: what quoting needs is imported while the host's library is there.
            platform.quote(self._identity_or_fail())
        except InclavareError as error:
            raise EnclaveRuntimeError(
                f"{self.name}: the sim platform cannot quote for this enclave: {error}"
            ) from None
        self._platform = platform

    def _identity_or_fail(self) -> EnclaveIdentity:
        if self._identity is None:
            raise EnclaveRuntimeError(f"{self.name}: no enclave was launched")
        return self._identity

    def _answer_channel(self, sock: socket.socket) -> None:
        """Answer one process's quote requests until every copy of its end is closed."""
        with sock:
            while True:
                try:
                    packet = sock.recv(channel_module.MAX_PACKET)
                except OSError:
                    return
                if not packet:
                    return
                try:
                    sock.send(self._answer(packet))
                except OSError:
                    return

    def _answer(self, packet: bytes) -> bytes:
        platform = self._platform
        if platform is None or self._identity is None or self._keys is None:
            return channel_module.encode_error("the enclave runtime has ended")
        try:
            report_data = channel_module.parse_request(packet)
            report = create_report(self._keys, self._identity, QE_TARGET_INFO, report_data)
            return channel_module.encode_quote(platform.quote_report(report))
        except InclavareError as error:
            return channel_module.encode_error(str(error))

    # --- trusted files ---------------------------------------------------------------------

    def verify_program(self, path: str) -> bytes:
        """The content of program `path` (a path in the container), once every trusted file
        has been found unchanged and the program found among them; else LaunchRefused."""
        for file in self.manifest.files:
            try:
                found = digest_or_none("/", file.path)
            except TrustedFileError as error:
                raise LaunchRefused(f"enclave launch refused: {error}") from None
            if found is None:
                raise LaunchRefused(f"enclave launch refused: trusted file {file.path} is missing")
            if found != file.sha256:
                raise LaunchRefused(
                    f"enclave launch refused: trusted file {file.path} differs from the signed "
                    f"measurement (signed SHA-256 {file.sha256.hex()}, found {found.hex()})"
                )
        try:
            with open(path, "rb") as program:
                content = program.read()
        except OSError as error:
            raise EnclaveRuntimeError(
                f"{self.name}: cannot read {path}: {error.strerror}"
            ) from None
        digest = hashlib.sha256(content).digest()
        signed = self.manifest.digest_of(normalise_path(path))
        if digest != signed and digest not in {file.sha256 for file in self.manifest.files}:
            raise LaunchRefused(
                f"enclave launch refused: {path} is not among the enclave's trusted files"
            )
        return content

    # --- for subclasses --------------------------------------------------------------------

    def _configure(self, options: list[tuple[str, str]]) -> None:
        self.debug = self.debug or any(key == "debug" for key, _ in options)

    def _prepare(self, path: str, content: bytes) -> object:
        raise NotImplementedError

    def _release(self, prepared: object) -> None:
        """Called in the parent once the child has started (or failed to)."""

    def _run(self, prepared: object, argv: list[str], env: list[str], report: int) -> int:
        """In the child, with stdio in place: run the program; return its exit status (or
        never return). Close `report` once nothing can fail any more."""
        raise NotImplementedError

    def _child(
        self, prepared: object, argv: list[str], env: list[str], stdio: Stdio, report: int
    ) -> None:  # pragma: no cover - runs in the forked child
        code = 127
        try:
            syscalls.reset_signals()
            os.setsid()
            _place_stdio(stdio)
            code = self._run(prepared, argv, env, report)
        except BaseException as error:
            message = str(error) if isinstance(error, InclavareError) else _describe(error)
            try:
                os.write(report, message.encode(errors="replace")[:4000])
            except OSError:
                pass
        os._exit(code)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}"


def _place_stdio(stdio: Stdio) -> None:
    """Put the given descriptors (-1: keep ours) on 0, 1 and 2, even where they overlap."""
    moved = [os.dup(fd) if fd >= 0 else -1 for fd in stdio]
    for target, fd in enumerate(moved):
        if fd >= 0:
            os.dup2(fd, target)
            os.close(fd)


def _close_sockets(*sockets: socket.socket | None) -> None:
    for sock in sockets:
        if sock is not None:
            sock.close()


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _wait(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        raise EnclaveRuntimeError(f"enclave process {pid} is not a child of the runtime") from None
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
