# The part of pyseccomp 0.1.2 (libseccomp through ctypes) that this project uses; the
# package ships annotations but no py.typed marker.
from typing import Any, overload

KILL_PROCESS: int
KILL_THREAD: int
KILL: int
TRAP: int
NOTIFY: int
LOG: int
ALLOW: int

def ERRNO(x: int) -> int: ...
def TRACE(x: int) -> int: ...

NE: int
LT: int
LE: int
EQ: int
GE: int
GT: int
MASKED_EQ: int

class Arch:
    NATIVE: int
    X86: int
    X86_64: int
    X32: int
    ARM: int
    AARCH64: int

class Arg:
    def __init__(self, arg: int, op: int, data_a: int, data_b: int = 0) -> None: ...

class Attr:
    ACT_DEFAULT: int
    ACT_BADARCH: int
    CTL_NNP: int
    CTL_TSYNC: int
    API_TSKIP: int
    CTL_LOG: int
    CTL_SSB: int

class SyscallFilter:
    def __init__(self, defaction: int) -> None: ...
    def load(self) -> None: ...
    def export_bpf(self, file: Any) -> None: ...
    def get_attr(self, attr: int) -> int: ...
    def set_attr(self, attr: int, value: int) -> None: ...
    def add_arch(self, arch: int) -> None: ...
    def exist_arch(self, arch: int) -> bool: ...
    def add_rule(self, action: int, syscall: int | str, *args: Arg) -> None: ...

def system_arch() -> int: ...
def get_api() -> int: ...
@overload
def resolve_syscall(arch: int, syscall: int) -> bytes: ...
@overload
def resolve_syscall(arch: int, syscall: str) -> int: ...
