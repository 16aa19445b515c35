"""Device rules on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

cgroup v2 has no devices controller. The kernel instead runs, for every access to a device
node by a process of the cgroup, the device programs attached to it, with a context of three
32-bit words: the access type (the requested access bits in the upper half, the device type
in the lower), the major and the minor number. The program returns 1 to allow, 0 to deny.

`compile_allowlist` turns an `Allowlist` (devices.py) into such a program, checking each
exception in turn and returning the default when none matches; `attach_device_program`
loads it with the bpf() system call and attaches it to a cgroup directory. The program is
pure data until loaded, so the compiler is tested without privileges.
"""

from __future__ import annotations

import os
import struct

from inclavare.cgroups.devices import Allowlist
from inclavare.cgroups.errors import CgroupError

# Instruction classes, operations and sources (linux/bpf_common.h, linux/bpf.h).
_LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
_ALU64_MOV_X = 0xBF  # dst = src
_ALU64_MOV_K = 0xB7  # dst = imm
_ALU64_AND_K = 0x57  # dst &= imm
_ALU64_RSH_K = 0x77  # dst >>= imm
_JMP_JNE_K = 0x55  # if dst != imm goto pc + off
_JMP_JEQ_K = 0x15  # if dst == imm goto pc + off
_EXIT = 0x95

# The context's device types (BPF_DEVCG_DEV_*). Its access bits (BPF_DEVCG_ACC_MKNOD 1,
# READ 2, WRITE 4) are those of devices.ACCESS_BITS, so the allowlist's masks go in as is.
DEVICE_TYPES = {"b": 1, "c": 2}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

# bpf() by architecture (os.uname().machine)
_BPF_SYSCALL = {
    "x86_64": 321,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "ppc64le": 361,
    "s390x": 351,
    "i686": 357,
    "armv7l": 386,
}

# Registers: r1 holds the context on entry, r0 the verdict on exit.
_TYPE, _ACCESS, _MAJOR, _MINOR, _SCRATCH = 2, 3, 4, 5, 6


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def compile_allowlist(allowlist: Allowlist) -> bytes:
    """The program, as the kernel's array of 8-byte instructions."""
    program = [
        _insn(_LDX_MEM_W, _TYPE, 1, 0),
        _insn(_ALU64_MOV_X, _ACCESS, _TYPE),
        _insn(_ALU64_AND_K, _TYPE, imm=0xFFFF),
        _insn(_ALU64_RSH_K, _ACCESS, imm=16),
        _insn(_LDX_MEM_W, _MAJOR, 1, 4),
        _insn(_LDX_MEM_W, _MINOR, 1, 8),
    ]
    verdict = 0 if allowlist.default_allow else 1
    for (kind, major, minor), mask in allowlist.exceptions.items():
        # Each test jumps to the end of this block when the exception does not apply.
        tests: list[tuple[int, int, int]] = [(_JMP_JNE_K, _TYPE, DEVICE_TYPES[kind])]
        if major >= 0:
            tests.append((_JMP_JNE_K, _MAJOR, major))
        if minor >= 0:
            tests.append((_JMP_JNE_K, _MINOR, minor))
        block: list[tuple[int, int, int]] = []
        block.extend(tests)
        # Access: a deny-by-default list allows when the exception grants every requested
        # bit; an allow-by-default list denies when the exception names any requested bit.
        block.append((_ALU64_MOV_X, _SCRATCH, _ACCESS))
        if allowlist.default_allow:
            block.append((_ALU64_AND_K, _SCRATCH, mask))
            block.append((_JMP_JEQ_K, _SCRATCH, 0))
        else:
            block.append((_ALU64_AND_K, _SCRATCH, ~mask & 0x7))
            block.append((_JMP_JNE_K, _SCRATCH, 0))
        length = len(block) + 2  # then: r0 = verdict; exit
        for index, (code, register, value) in enumerate(block):
            if code in (_JMP_JNE_K, _JMP_JEQ_K):
                program.append(_insn(code, register, off=length - index - 1, imm=value))
            elif code == _ALU64_MOV_X:
                program.append(_insn(code, register, value))
            else:
                program.append(_insn(code, register, imm=value))
        program.append(_insn(_ALU64_MOV_K, 0, imm=verdict))
        program.append(_insn(_EXIT))
    program.append(_insn(_ALU64_MOV_K, 0, imm=1 if allowlist.default_allow else 0))
    program.append(_insn(_EXIT))
    return b"".join(program)


def _bpf(command: int, attributes: bytearray) -> int:
    """The bpf() system call; returns its result or raises OSError."""
    import ctypes

    number = _BPF_SYSCALL.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"bpf() number unknown on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = (ctypes.c_char * len(attributes)).from_buffer(attributes)
    result = int(
        libc.syscall(
            ctypes.c_long(number),
            ctypes.c_int(command),
            ctypes.cast(buffer, ctypes.c_void_p),
            ctypes.c_uint(len(attributes)),
        )
    )
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def load_device_program(program: bytes) -> int:
    """Load the program into the kernel; returns its file descriptor."""
    import ctypes

    instructions = ctypes.create_string_buffer(program, len(program))
    license_text = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)
    attributes = bytearray(128)
    struct.pack_into(
        "<IIQQIIQ",
        attributes,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(program) // 8,
        ctypes.addressof(instructions),
        ctypes.addressof(license_text),
        1,
        len(log),
        ctypes.addressof(log),
    )
    attributes[48:64] = b"rune_devices".ljust(16, b"\0")
    try:
        return _bpf(BPF_PROG_LOAD, attributes)
    except OSError as error:
        verifier = log.value.decode(errors="replace").strip().splitlines()
        detail = f" ({verifier[-1]})" if verifier else ""
        raise CgroupError(f"load the device eBPF program: {error.strerror}{detail}") from None


def attach_device_program(directory: str, allowlist: Allowlist) -> None:
    """Compile, load and attach the allowlist's program to a cgroup v2 directory.

    The attachment holds the program: it lives as long as the cgroup, and goes with it."""
    program_fd = load_device_program(compile_allowlist(allowlist))
    try:
        cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attributes = bytearray(
                struct.pack(
                    "<IIIII", cgroup_fd, program_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0
                )
            )
            try:
                _bpf(BPF_PROG_ATTACH, attributes)
            except OSError as error:
                raise CgroupError(
                    f"attach the device eBPF program to {directory}: {error.strerror}"
                ) from None
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(program_fd)
