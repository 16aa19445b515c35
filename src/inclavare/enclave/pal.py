"""PAL shared objects: the Enclave Runtime PAL ABI of Inclavare, called through ctypes.

An enclave runtime is a shared object exporting, by API version:

    all   int pal_get_version(void)                  absent: version 1; above 3: refused
    v1    int pal_init(const pal_attr_v1 *attr)      attr = {const char *args, *log_level}
          int pal_exec(const char *path, char *const argv[], const pal_stdio_fds *stdio,
                       int *exit_code)               runs the payload to its end
          int pal_kill(int sig, int pid)             optional in v1 (note the order)
          int pal_destroy(void)
    v2    int pal_init(const pal_attr_v1 *attr)
          int pal_create_process(pal_create_process_args *args)
                                 args = {const char *path; char *const *argv, *env;
                                         const pal_stdio_fds *stdio; int *pid}
          int pal_exec(pal_exec_args *args)          args = {int pid; int *exit_value}
          int pal_kill(int pid, int sig)
          int pal_destroy(void)
    v3    v2, with pal_init(const pal_attr_v3 *attr) attr = {pal_attr_v1; int fd; uint64 addr}
          int pal_get_local_report(const void *target_info, int target_info_len,
                                   void *report, int *report_len)

pal_stdio_fds is {int stdin, stdout, stderr}. A negative return value is -errno.

Two extensions keep upstream PALs working unchanged: v3's `fd` carries the enclave launch
record of the simulated TEE (a sealed memfd) when rune launched the enclave, -1 otherwise;
and a 576-byte target info to pal_get_local_report is the 512-byte target info followed by
64 bytes of report data (upstream PALs accept only 512 and report zero report data).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Sequence

from inclavare.enclave.runtime import Stdio
from inclavare.errors import InclavareError

SUPPORTED_VERSIONS = (1, 2, 3)
REQUIRED_SYMBOLS = {
    1: ("pal_init", "pal_exec", "pal_destroy"),
    2: ("pal_init", "pal_create_process", "pal_exec", "pal_kill", "pal_destroy"),
    3: (
        "pal_init",
        "pal_create_process",
        "pal_exec",
        "pal_kill",
        "pal_get_local_report",
        "pal_destroy",
    ),
}
TARGET_INFO_SIZE = 512
REPORT_DATA_SIZE = 64
REPORT_SIZE = 432


class PalError(InclavareError):
    """A PAL cannot be used, or one of its calls failed."""


class PalLoadError(PalError):
    """The shared object is missing, cannot be loaded, or is not a PAL rune supports."""


class PalCallError(PalError):
    """A PAL entry point returned a negative errno value."""

    def __init__(self, pal: str, function: str, code: int) -> None:
        self.function = function
        self.errno = code
        name = errno.errorcode.get(code, f"errno {code}")
        super().__init__(f"PAL {pal}: {function} failed with -{code} ({name}: {os.strerror(code)})")


# --- the C structures ---------------------------------------------------------------------


class _AttrV1(ctypes.Structure):
    _fields_ = (("args", ctypes.c_char_p), ("log_level", ctypes.c_char_p))


class _AttrV3(ctypes.Structure):
    _fields_ = (("attr_v1", _AttrV1), ("fd", ctypes.c_int), ("addr", ctypes.c_uint64))


class _StdioFds(ctypes.Structure):
    _fields_ = (("stdin", ctypes.c_int), ("stdout", ctypes.c_int), ("stderr", ctypes.c_int))


class _CreateProcessArgs(ctypes.Structure):
    _fields_ = (
        ("path", ctypes.c_char_p),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("env", ctypes.POINTER(ctypes.c_char_p)),
        ("stdio", ctypes.POINTER(_StdioFds)),
        ("pid", ctypes.POINTER(ctypes.c_int)),
    )


class _ExecArgs(ctypes.Structure):
    _fields_ = (("pid", ctypes.c_int), ("exit_value", ctypes.POINTER(ctypes.c_int)))


def _c_string(text: str, what: str) -> bytes:
    raw = os.fsencode(text)
    if b"\0" in raw:
        raise PalError(f"{what} contains a NUL byte")
    return raw


def _c_string_array(items: Sequence[str], what: str) -> ctypes.Array[ctypes.c_char_p]:
    encoded = [_c_string(item, what) for item in items]
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


# --- loading ------------------------------------------------------------------------------


def load_pal(path: str) -> Pal:
    """Load the PAL at `path` (a host path) and check its version and entry points."""
    if not os.path.isabs(path):
        raise PalLoadError(f"the PAL path {path!r} must be absolute")
    if not os.path.isfile(path):
        raise PalLoadError(f"the PAL {path} does not exist or is not a file")
    try:
        library = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as error:
        raise PalLoadError(f"cannot load the PAL {path}: {error}") from None

    get_version = getattr(library, "pal_get_version", None)
    if get_version is None:
        version = 1
    else:
        get_version.argtypes = ()
        get_version.restype = ctypes.c_int
        version = int(get_version())
    if version not in SUPPORTED_VERSIONS:
        raise PalLoadError(
            f"the PAL {path} implements PAL API version {version}; rune supports versions "
            f"{SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]}"
        )
    missing = [name for name in REQUIRED_SYMBOLS[version] if not hasattr(library, name)]
    if missing:
        raise PalLoadError(f"the PAL {path} (API version {version}) lacks {', '.join(missing)}")
    return Pal(path, library, version)


class Pal:
    """A loaded PAL, with the operations of `EnclaveRuntime` (runtime.py)."""

    def __init__(self, path: str, library: ctypes.CDLL, version: int) -> None:
        self.path = path
        self._library = library
        self._version = version
        self._v1_pending: tuple[str, Sequence[str], Sequence[str], Stdio] | None = None
        self._lock = threading.Lock()

    @property
    def api_version(self) -> int:
        return self._version

    def _function(self, name: str, *argtypes: type[ctypes._CDataType]) -> ctypes._NamedFuncPointer:
        function: ctypes._NamedFuncPointer = getattr(self._library, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
        return function

    def _check(self, name: str, result: int) -> int:
        if result < 0:
            raise PalCallError(self.path, name, -result)
        return result

    def init(self, args: str, log_level: str, launch_record: bytes | None = None) -> None:
        attr_v1 = _AttrV1(
            _c_string(args, "ENCLAVE_RUNTIME_ARGS"), _c_string(log_level, "log level")
        )
        if self._version < 3:
            function = self._function("pal_init", ctypes.POINTER(_AttrV1))
            self._check("pal_init", function(ctypes.byref(attr_v1)))
            return
        function = self._function("pal_init", ctypes.POINTER(_AttrV3))
        fd = -1 if launch_record is None else sealed_memfd("inclavare-enclave", launch_record)
        try:
            self._check("pal_init", function(ctypes.byref(_AttrV3(attr_v1, fd, 0))))
        finally:
            if fd >= 0:
                os.close(fd)

    def create_process(
        self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Stdio
    ) -> int:
        if self._version == 1:
            # Version 1 starts and waits in one call (pal_exec); it happens in exec().
            with self._lock:
                if self._v1_pending is not None:
                    raise PalError(f"PAL {self.path} (API version 1) runs one process at a time")
                self._v1_pending = (path, list(argv), list(env), stdio)
            return 0
        c_argv = _c_string_array(argv, "an argument")
        c_env = _c_string_array(env, "an environment entry")
        fds = _StdioFds(*stdio)
        pid = ctypes.c_int(-1)
        args = _CreateProcessArgs(
            _c_string(path, "the program path"),
            c_argv,
            c_env,
            ctypes.pointer(fds),
            ctypes.pointer(pid),
        )
        function = self._function("pal_create_process", ctypes.POINTER(_CreateProcessArgs))
        self._check("pal_create_process", function(ctypes.byref(args)))
        return pid.value

    def exec(self, pid: int) -> int:
        exit_value = ctypes.c_int(0)
        if self._version == 1:
            return self._exec_v1()
        function = self._function("pal_exec", ctypes.POINTER(_ExecArgs))
        self._check("pal_exec", function(ctypes.byref(_ExecArgs(pid, ctypes.pointer(exit_value)))))
        return exit_value.value

    def _exec_v1(self) -> int:
        with self._lock:
            pending, self._v1_pending = self._v1_pending, None
        if pending is None:
            raise PalError(f"PAL {self.path}: exec without create_process")
        path, argv, env, stdio = pending
        function = self._function(
            "pal_exec",
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(_StdioFds),
            ctypes.POINTER(ctypes.c_int),
        )
        c_argv = _c_string_array(argv, "an argument")
        fds = _StdioFds(*stdio)
        exit_code = ctypes.c_int(0)
        # pal_exec of version 1 takes no environment: the payload inherits the process's.
        with _environment(env):
            result = function(
                _c_string(path, "the program path"),
                c_argv,
                ctypes.byref(fds),
                ctypes.byref(exit_code),
            )
        self._check("pal_exec", result)
        return exit_code.value

    def kill(self, pid: int, signal: int) -> None:
        if self._version == 1:
            if not hasattr(self._library, "pal_kill"):
                raise PalCallError(self.path, "pal_kill", errno.ENOSYS)
            function = self._function("pal_kill", ctypes.c_int, ctypes.c_int)
            self._check("pal_kill", function(signal, pid))
            return
        function = self._function("pal_kill", ctypes.c_int, ctypes.c_int)
        self._check("pal_kill", function(pid, signal))

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        if self._version < 3:
            raise PalCallError(self.path, "pal_get_local_report", errno.ENOSYS)
        if len(target_info) != TARGET_INFO_SIZE:
            raise PalError(f"target info must be {TARGET_INFO_SIZE} bytes, got {len(target_info)}")
        if len(report_data) > REPORT_DATA_SIZE:
            raise PalError(f"report data is {len(report_data)} bytes; at most 64 fit")
        request = bytes(target_info)
        if report_data:
            request += bytes(report_data).ljust(REPORT_DATA_SIZE, b"\0")
        buffer = ctypes.create_string_buffer(request, len(request))
        report = ctypes.create_string_buffer(REPORT_SIZE)
        size = ctypes.c_int(REPORT_SIZE)
        function = self._function(
            "pal_get_local_report",
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
        )
        self._check(
            "pal_get_local_report",
            function(buffer, len(request), report, ctypes.byref(size)),
        )
        if size.value != REPORT_SIZE:
            raise PalError(
                f"PAL {self.path}: pal_get_local_report returned {size.value} bytes, "
                f"not a {REPORT_SIZE}-byte report"
            )
        return report.raw

    def destroy(self) -> None:
        self._check("pal_destroy", self._function("pal_destroy")())


class _environment:
    """Within the block, the process environment is exactly `entries` ("NAME=value")."""

    def __init__(self, entries: Sequence[str]) -> None:
        self._entries = entries
        self._saved: dict[str, str] = {}

    def __enter__(self) -> None:
        self._saved = dict(os.environ)
        os.environ.clear()
        for entry in self._entries:
            name, separator, value = entry.partition("=")
            if separator and name:
                os.environ[name] = value

    def __exit__(self, *exc_info: object) -> None:
        os.environ.clear()
        os.environ.update(self._saved)


def sealed_memfd(name: str, content: bytes) -> int:
    """A read-only memory file holding `content` (close-on-exec, sealed against change)."""
    import fcntl

    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, content)
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL,
        )
    except OSError:
        os.close(fd)
        raise
    return fd
