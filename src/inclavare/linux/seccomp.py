"""Seccomp: the runtime-spec's `linux.seccomp` object, checked, then loaded with libseccomp.

Three steps, with a clear boundary between checking and acting:

- `compile_profile(raw)` turns the JSON object into a `SeccompProfile`, or raises a
  `SeccompError` whose one-line message names the field ("config.json:
  linux.seccomp.syscalls[3].names: unknown syscall 'foo'"). It does no I/O and loads no
  library for an ordinary profile: system call names are looked up in a table of the names
  libseccomp knows (`seccomp_names`), and only a name missing from it is asked of libseccomp
  itself. rune calls it at `create`, before anything is made, so that a bad profile makes
  `create` fail with nothing to clean up.
- `build_filter(profile)` imports the libseccomp binding (pyseccomp) and builds the filter
  in memory; `SeccompFilter.load()` hands it to the kernel for the calling thread (and, with
  SECCOMP_FILTER_FLAG_TSYNC, its siblings). `load(profile)` does both.
- `features()` is the `linux.seccomp` part of the runtime-spec features document.

Where the container's init calls them (runc's order):

- `build_filter` before the init leaves the host's filesystem (pivot_root for `create`,
  joining the container's mount namespace for `exec`): the binding and libseccomp are
  loaded from the host.
- `SeccompFilter.load` when noNewPrivileges is false: before the process's user and
  capabilities are set, because without no_new_privs the kernel requires CAP_SYS_ADMIN.
  When noNewPrivileges is true: as late as possible, after PR_SET_NO_NEW_PRIVS, the wait
  for `start` and the startContainer hooks, right before execve, so that the profile
  constrains as little of the runtime's own work as possible. Every system call the init
  makes after loading (writing to exec.fifo, execve itself) must be allowed by the profile.

The filter leaves no_new_privs alone (libseccomp would set it): noNewPrivileges decides.
Semantics follow runc where the runtime-spec is silent: a rule whose action is the default
action is left out (the kernel would do the same either way); the conditions of one entry
must all hold, except when two of them test the same argument, in which case each
condition becomes a rule of its own (any of them matches); SCMP_ACT_KILL is
SCMP_ACT_KILL_THREAD; errnoRet and defaultErrnoRet default to EPERM.
"""

from __future__ import annotations

import os
import sys

from inclavare.errors import InclavareError
from inclavare.lightjson import type_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import pyseccomp


class SeccompError(InclavareError):
    """A seccomp profile that cannot be used, or a filter the kernel refused."""


# The kernel's action values (SECCOMP_RET_*); ERRNO and TRACE carry 16 bits of data.
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
# The actions that take errnoRet, and its largest value: an errno for ERRNO (the kernel's
# MAX_ERRNO), a 16-bit message for the tracer for TRACE.
_ERRNO_RET_MAX = {"SCMP_ACT_ERRNO": 4095, "SCMP_ACT_TRACE": 0xFFFF}
_EPERM = 1

# libseccomp's comparison operators (enum scmp_compare).
_OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
_ARGUMENTS = 6

# Architecture tokens: the kernel's AUDIT_ARCH_* values (ELF machine, 64-bit and
# little-endian bits, MIPS n32 convention bit), as libseccomp uses them.
_EM = {"386": 3, "MIPS": 8, "PARISC": 15, "PPC": 20, "PPC64": 21, "S390": 22, "ARM": 40}
_EM |= {"X86_64": 62, "AARCH64": 183, "RISCV": 243}
_BITS64 = 0x80000000
_LE = 0x40000000
_N32 = 0x20000000
_ARCHITECTURES = {
    "SCMP_ARCH_X86": _EM["386"] | _LE,
    "SCMP_ARCH_X86_64": _EM["X86_64"] | _BITS64 | _LE,
    "SCMP_ARCH_X32": _EM["X86_64"] | _LE,
    "SCMP_ARCH_ARM": _EM["ARM"] | _LE,
    "SCMP_ARCH_AARCH64": _EM["AARCH64"] | _BITS64 | _LE,
    "SCMP_ARCH_MIPS": _EM["MIPS"],
    "SCMP_ARCH_MIPS64": _EM["MIPS"] | _BITS64,
    "SCMP_ARCH_MIPS64N32": _EM["MIPS"] | _BITS64 | _N32,
    "SCMP_ARCH_MIPSEL": _EM["MIPS"] | _LE,
    "SCMP_ARCH_MIPSEL64": _EM["MIPS"] | _BITS64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": _EM["MIPS"] | _BITS64 | _LE | _N32,
    "SCMP_ARCH_PPC": _EM["PPC"],
    "SCMP_ARCH_PPC64": _EM["PPC64"] | _BITS64,
    "SCMP_ARCH_PPC64LE": _EM["PPC64"] | _BITS64 | _LE,
    "SCMP_ARCH_S390": _EM["S390"],
    "SCMP_ARCH_S390X": _EM["S390"] | _BITS64,
    "SCMP_ARCH_PARISC": _EM["PARISC"],
    "SCMP_ARCH_PARISC64": _EM["PARISC"] | _BITS64,
    "SCMP_ARCH_RISCV64": _EM["RISCV"] | _BITS64 | _LE,
}

_NATIVE_LITTLE_ENDIAN = sys.byteorder == "little"

# The flags rune applies: libseccomp's filter attribute for each (enum scmp_filter_attr),
# and the libseccomp API level from which library and kernel support it.
_FLAG_ATTRIBUTES = {
    "SECCOMP_FILTER_FLAG_TSYNC": 4,
    "SECCOMP_FILTER_FLAG_LOG": 6,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 7,
}
_FLAG_API_LEVELS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 2,
    "SECCOMP_FILTER_FLAG_LOG": 3,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
# Flags the kernel defines that rune does not apply, and why.
_REFUSED_FLAGS = {
    "SECCOMP_FILTER_FLAG_NEW_LISTENER": "seccomp notification is not supported",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": "seccomp notification is not supported",
    "SECCOMP_FILTER_FLAG_TSYNC_ESRCH": "it only applies to seccomp notification, "
    "which is not supported",
}
_ATTR_CTL_NNP = 3
_ATTR_API_SYSRAWRC = 9


class _Record:
    """Equality and a readable repr from __slots__."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Condition(_Record):
    """A test of one system call argument: `arg op value` (MASKED_EQ: `arg & value ==
    value_two`)."""

    __slots__ = ("index", "op", "value", "value_two")

    def __init__(self, index: int, op: str, value: int, value_two: int = 0) -> None:
        self.index = index
        self.op = op
        self.value = value
        self.value_two = value_two


class Rule(_Record):
    """One `syscalls` entry: what happens to the named calls when the conditions hold.
    `position` is the entry's index in `syscalls`, for messages."""

    __slots__ = ("action", "args", "errno_ret", "names", "position")

    def __init__(
        self,
        names: tuple[str, ...],
        action: str,
        errno_ret: int | None = None,
        args: tuple[Condition, ...] = (),
        position: int = 0,
    ) -> None:
        self.names = names
        self.action = action
        self.errno_ret = errno_ret
        self.args = args
        self.position = position

    @property
    def action_value(self) -> int:
        return _action_value(self.action, self.errno_ret)


class SeccompProfile(_Record):
    """A checked `linux.seccomp` object."""

    __slots__ = ("architectures", "default_action", "default_errno_ret", "flags", "rules")

    def __init__(
        self,
        default_action: str,
        default_errno_ret: int | None = None,
        architectures: tuple[str, ...] = (),
        flags: tuple[str, ...] = (),
        rules: tuple[Rule, ...] = (),
    ) -> None:
        self.default_action = default_action
        self.default_errno_ret = default_errno_ret
        self.architectures = architectures
        self.flags = flags
        self.rules = rules

    @property
    def default_action_value(self) -> int:
        return _action_value(self.default_action, self.default_errno_ret)


def _action_value(action: str, errno_ret: int | None) -> int:
    value = _ACTIONS[action]
    if action in _ERRNO_RET_MAX:
        value |= _EPERM if errno_ret is None else errno_ret
    return value


# --- compile: JSON to a SeccompProfile, no side effects ---------------------------------


def _invalid(path: str, problem: str) -> SeccompError:
    return SeccompError(f"config.json: {path}: {problem}")


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(path, f"must be an object, got {type_name(value)}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(path, f"must be a list, got {type_name(value)}")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid(path, f"must be a string, got {type_name(value)}")
    return value


def _strings(value: object, path: str) -> list[str]:
    return [_string(item, f"{path}[{i}]") for i, item in enumerate(_list(value, path))]


def _unsigned(value: object, path: str, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(path, f"must be an unsigned integer, got {type_name(value)}")
    if not 0 <= value <= maximum:
        raise _invalid(path, f"{value} out of range (0 to {maximum})")
    return value


def _action(value: object, path: str) -> str:
    name = _string(value, path)
    if name == "SCMP_ACT_NOTIFY":
        raise _invalid(path, "SCMP_ACT_NOTIFY is not supported (no seccomp notification)")
    if name not in _ACTIONS:
        raise _invalid(path, f"unknown action {name!r}")
    return name


def _errno_ret(raw: dict[str, Any], key: str, action: str, path: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    where = f"{path}.{key}"
    if action not in _ERRNO_RET_MAX:
        raise _invalid(where, f"{action} takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE)")
    return _unsigned(value, where, _ERRNO_RET_MAX[action])


def _condition(raw: object, path: str) -> Condition:
    obj = _object(raw, path)
    for key in ("index", "value", "op"):
        if obj.get(key) is None:
            raise _invalid(f"{path}.{key}", "required")
    index = obj["index"]
    if not isinstance(index, int) or isinstance(index, bool):
        raise _invalid(f"{path}.index", f"must be an unsigned integer, got {type_name(index)}")
    if not 0 <= index < _ARGUMENTS:
        raise _invalid(f"{path}.index", f"index {index} out of range (arguments are 0 to 5)")
    value = _unsigned(obj["value"], f"{path}.value", 2**64 - 1)
    value_two = obj.get("valueTwo")
    value_two = 0 if value_two is None else _unsigned(value_two, f"{path}.valueTwo", 2**64 - 1)
    op = _string(obj["op"], f"{path}.op")
    if op not in _OPERATORS:
        raise _invalid(f"{path}.op", f"unknown operator {op!r}")
    return Condition(index, op, value, value_two)


def _rule(raw: object, path: str, position: int, arches: tuple[int, ...]) -> Rule:
    obj = _object(raw, path)
    if obj.get("names") is None:
        raise _invalid(f"{path}.names", "required")
    names = _strings(obj["names"], f"{path}.names")
    if not names:
        raise _invalid(f"{path}.names", "must name at least one system call")
    for name in names:
        if not _is_known_syscall(name, arches):
            raise _invalid(f"{path}.names", f"unknown syscall {name!r}")
    if obj.get("action") is None:
        raise _invalid(f"{path}.action", "required")
    action = _action(obj["action"], f"{path}.action")
    errno_ret = _errno_ret(obj, "errnoRet", action, path)
    args = tuple(
        _condition(item, f"{path}.args[{i}]")
        for i, item in enumerate(_list(obj.get("args"), f"{path}.args"))
    )
    return Rule(tuple(dict.fromkeys(names)), action, errno_ret, args, position)


def _flags(raw: object, path: str) -> tuple[str, ...]:
    flags = _strings(raw, path)
    for i, flag in enumerate(flags):
        if flag in _REFUSED_FLAGS:
            raise _invalid(f"{path}[{i}]", f"{flag} is not supported: {_REFUSED_FLAGS[flag]}")
        if flag not in _FLAG_ATTRIBUTES:
            raise _invalid(f"{path}[{i}]", f"unknown flag {flag!r}")
    return tuple(dict.fromkeys(flags))


def compile_profile(raw: object, path: str = "linux.seccomp") -> SeccompProfile:
    """Check a `linux.seccomp` object (parsed JSON) and return it typed.

    Raises SeccompError naming the field, under `path`. Unknown properties are ignored, as
    the runtime-spec requires. Pure: no file, process or kernel state is touched.
    """
    obj = _object(raw, path)
    if obj.get("defaultAction") is None:
        raise _invalid(f"{path}.defaultAction", "required")
    default_action = _action(obj["defaultAction"], f"{path}.defaultAction")
    default_errno_ret = _errno_ret(obj, "defaultErrnoRet", default_action, path)

    architectures = _strings(obj.get("architectures"), f"{path}.architectures")
    for i, arch in enumerate(architectures):
        if arch not in _ARCHITECTURES:
            raise _invalid(f"{path}.architectures[{i}]", f"unknown architecture {arch!r}")
        # libseccomp cannot put both byte orders in one filter, and the native one is in it.
        if bool(_ARCHITECTURES[arch] & _LE) != _NATIVE_LITTLE_ENDIAN:
            order = "little" if _NATIVE_LITTLE_ENDIAN else "big"
            raise _invalid(
                f"{path}.architectures[{i}]",
                f"{arch} does not have this machine's byte order ({order}-endian)",
            )
    architectures = list(dict.fromkeys(architectures))
    flags = _flags(obj.get("flags"), f"{path}.flags")

    # The listener is only used by SCMP_ACT_NOTIFY, which _action refuses; the runtime-spec
    # says to ignore it otherwise.
    listener = obj.get("listenerPath")
    listener = "" if listener is None else _string(listener, f"{path}.listenerPath")
    metadata = obj.get("listenerMetadata")
    metadata = "" if metadata is None else _string(metadata, f"{path}.listenerMetadata")
    if metadata and not listener:
        raise _invalid(f"{path}.listenerMetadata", "set without listenerPath")

    arches = tuple(_ARCHITECTURES[arch] for arch in architectures)
    rules = tuple(
        _rule(item, f"{path}.syscalls[{i}]", i, arches)
        for i, item in enumerate(_list(obj.get("syscalls"), f"{path}.syscalls"))
    )
    return SeccompProfile(default_action, default_errno_ret, tuple(architectures), flags, rules)


# libseccomp's name-to-number lookup, once loaded: absent before the first use, None when
# libseccomp is not installed.
_resolver: dict[str, Callable[[int, bytes], int] | None] = {}


def _libseccomp_resolver() -> Callable[[int, bytes], int] | None:
    if "resolve" not in _resolver:
        import ctypes

        try:
            library = ctypes.CDLL("libseccomp.so.2")
        except OSError:
            _resolver["resolve"] = None
        else:
            resolve = library.seccomp_syscall_resolve_name_arch
            resolve.argtypes = (ctypes.c_uint32, ctypes.c_char_p)
            resolve.restype = ctypes.c_int
            _resolver["resolve"] = resolve
    return _resolver["resolve"]


def _is_known_syscall(name: str, arches: tuple[int, ...]) -> bool:
    """Whether libseccomp resolves the name for the native architecture or any of
    `arches`. Names in the table need no library; others are asked of libseccomp."""
    from inclavare.linux.seccomp_names import SYSCALL_NAMES

    if name in SYSCALL_NAMES:
        return True
    if not name.isascii() or not name.isprintable():
        return False
    resolve = _libseccomp_resolver()
    if resolve is None:
        return False
    encoded = name.encode()
    # Architecture 0 is the native one; -1 is libseccomp's __NR_SCMP_ERROR.
    return any(resolve(arch, encoded) != -1 for arch in (0, *arches))


# --- load: build the filter with libseccomp, hand it to the kernel ----------------------


# The sonames of the libraries pyseccomp looks up with ctypes.util.find_library.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def _import_binding() -> None:
    """Import pyseccomp (which loads libseccomp) unless it already is.

    pyseccomp finds libc and libseccomp with ctypes.util.find_library, whose module imports
    subprocess, shutil and tempfile and which runs ldconfig: some 20 ms and a process at
    every container start. Their sonames are fixed on Linux, so while pyseccomp is imported
    a stand-in for ctypes.util answers with them; the real module is put back afterwards.
    """
    if "pyseccomp" in sys.modules:
        return
    import ctypes
    import types

    stand_in = types.ModuleType("ctypes.util")
    stand_in.find_library = _SONAMES.get  # type: ignore[attr-defined]
    previous = sys.modules.get("ctypes.util")
    sys.modules["ctypes.util"] = stand_in
    ctypes.util = stand_in  # type: ignore[attr-defined]
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError, RuntimeError) as error:
        raise SeccompError(f"seccomp: libseccomp is not available: {error}") from None
    finally:
        if previous is None:
            del sys.modules["ctypes.util"]
            del ctypes.util  # type: ignore[attr-defined]
        else:
            sys.modules["ctypes.util"] = previous
            ctypes.util = previous  # type: ignore[attr-defined]


# Filters that were loaded: kept alive until execve, because releasing one frees memory,
# and the system calls that may take could be forbidden by the profile just loaded.
_loaded: list[object] = []


class SeccompFilter:
    """A filter built by libseccomp in this process, not yet loaded."""

    __slots__ = ("_filter",)

    def __init__(self, built: pyseccomp.SyscallFilter) -> None:
        self._filter = built

    def load(self) -> None:
        """Install the filter for the calling thread (all threads with TSYNC)."""
        try:
            self._filter.load()
        except OSError as error:
            if error.errno == 13:  # EACCES
                raise SeccompError(
                    "seccomp: loading the filter: permission denied: without CAP_SYS_ADMIN "
                    "a process needs no_new_privs (noNewPrivileges) to load a filter"
                ) from None
            raise SeccompError(f"seccomp: loading the filter: {error.strerror}") from None
        _loaded.append(self._filter)

    def bpf(self) -> bytes:
        """The filter as the kernel takes it: an array of 8-byte BPF instructions."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            with os.fdopen(write_end, "wb") as sink:  # a filter is far smaller than a pipe
                self._filter.export_bpf(sink)
            program = b""
            while chunk := os.read(read_end, 65536):
                program += chunk
        except OSError as error:
            raise SeccompError(f"seccomp: exporting the filter: {error.strerror}") from None
        finally:
            os.close(read_end)
        return program


def build_filter(profile: SeccompProfile) -> SeccompFilter:
    """Build the filter for a compiled profile with libseccomp, without loading it.

    Imports the binding and libseccomp: call it while the host's filesystem is visible.
    """
    _import_binding()
    import pyseccomp

    try:
        built = pyseccomp.SyscallFilter(profile.default_action_value)
    except OSError as error:
        raise SeccompError(
            f"seccomp: default action {profile.default_action}: not supported by this kernel "
            f"or libseccomp ({error.strerror})"
        ) from None
    try:
        # no_new_privs is noNewPrivileges' business, not the filter's.
        built.set_attr(_ATTR_CTL_NNP, 0)
    except OSError as error:
        raise SeccompError(f"seccomp: cannot leave no_new_privs alone: {error.strerror}") from None
    try:
        # The kernel's errno when loading fails, not libseccomp's ECANCELED (libseccomp 2.5+).
        built.set_attr(_ATTR_API_SYSRAWRC, 1)
    except OSError:
        pass
    for flag in profile.flags:
        try:
            built.set_attr(_FLAG_ATTRIBUTES[flag], 1)
        except OSError as error:
            raise SeccompError(
                f"seccomp: {flag}: not supported by this kernel or libseccomp ({error.strerror})"
            ) from None
    for arch in profile.architectures:
        token = _ARCHITECTURES[arch]
        try:
            if built.exist_arch(token):
                continue
            built.add_arch(token)
        except OSError as error:
            raise SeccompError(
                f"seccomp: architecture {arch}: not supported by libseccomp ({error.strerror})"
            ) from None
    default = profile.default_action_value
    for rule in profile.rules:
        action = rule.action_value
        if action == default:
            continue
        for name in rule.names:
            _add_rule(built, rule, action, name)
    return SeccompFilter(built)


def _add_rule(built: pyseccomp.SyscallFilter, rule: Rule, action: int, name: str) -> None:
    import pyseccomp

    where = f"seccomp: linux.seccomp.syscalls[{rule.position}]"
    # With the native architecture's number, libseccomp adds the rule for every
    # architecture of the filter; -1 is __NR_SCMP_ERROR.
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    if number == -1:
        raise SeccompError(f"{where}: {name}: libseccomp knows no such call on this machine")
    conditions = [pyseccomp.Arg(c.index, _OPERATORS[c.op], c.value, c.value_two) for c in rule.args]
    indexes = [c.index for c in rule.args]
    if len(set(indexes)) < len(indexes):
        groups = [[condition] for condition in conditions]
    else:
        groups = [conditions]
    for group in groups:
        try:
            built.add_rule(action, number, *group)
        except OSError as error:
            raise SeccompError(
                f"{where}: {name} with {rule.action}: libseccomp refused the rule "
                f"({error.strerror})"
            ) from None


def load(profile: SeccompProfile) -> None:
    """Build the filter and load it in the calling process (see the module's docstring for
    when the container's init may do both at once)."""
    build_filter(profile).load()


# --- features ---------------------------------------------------------------------------


def features() -> dict[str, Any]:
    """The `linux.seccomp` object of the runtime-spec features document: what rune
    recognises, and which flags this host's kernel and libseccomp support."""
    try:
        _import_binding()
    except SeccompError:
        enabled, api_level = False, 0
    else:
        import pyseccomp

        enabled = True
        try:
            api_level = pyseccomp.get_api()
        except NotImplementedError:
            api_level = 0
    return {
        "enabled": enabled,
        "actions": sorted(_ACTIONS),
        "operators": sorted(_OPERATORS),
        "archs": sorted(_ARCHITECTURES),
        "knownFlags": sorted(_FLAG_ATTRIBUTES),
        "supportedFlags": sorted(
            flag for flag, level in _FLAG_API_LEVELS.items() if api_level >= level
        ),
    }
