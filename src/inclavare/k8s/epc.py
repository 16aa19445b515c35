"""How much enclave memory (SGX EPC) a host has.

The Enclave Page Cache is enumerated by CPUID leaf 0x12: each sub-leaf from 2 on describes
one EPC section (the low four bits of EAX say 1 for a section, 0 once there are no more), with
its physical base in EAX[31:12] + EBX[19:0] and its size in ECX[31:12] + EDX[19:0] (bits
12..31 of the value, then bits 32..51). Linux exposes CPUID to root through the cpuid module's
/dev/cpu/N/cpuid: a 16-byte read at offset `leaf | subleaf << 32` returns EAX, EBX, ECX, EDX.

A host whose /proc/cpuinfo lacks the `sgx` flag has no SGX (or has it disabled); one that has
the flag but no readable /dev/cpu/0/cpuid cannot say how much EPC it has, and the caller must
be told so rather than guess.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from inclavare.errors import InclavareError

MIB = 1 << 20
SGX_LEAF = 0x12
FIRST_SECTION_SUBLEAF = 2
# The architecture allows few sections (one per memory controller or socket); stop well past.
MAX_SECTIONS = 64
SECTION_VALID = 1
CPUID_DEVICE = "/dev/cpu/0/cpuid"
CPUINFO = "/proc/cpuinfo"

# (leaf, subleaf) -> (eax, ebx, ecx, edx)
CpuidReader = Callable[[int, int], tuple[int, int, int, int]]


class EpcError(InclavareError):
    """The host's EPC cannot be determined."""


def section_size(registers: tuple[int, int, int, int]) -> int | None:
    """The size in bytes of the EPC section a CPUID 0x12 sub-leaf describes; None when the
    sub-leaf says there are no more sections."""
    eax, _ebx, ecx, edx = registers
    if eax & 0xF != SECTION_VALID:
        return None
    return (ecx & 0xFFFFF000) | ((edx & 0xFFFFF) << 32)


def epc_bytes(read: CpuidReader) -> int:
    """The total EPC of the host, the sum of its sections."""
    total = 0
    for subleaf in range(FIRST_SECTION_SUBLEAF, FIRST_SECTION_SUBLEAF + MAX_SECTIONS):
        size = section_size(read(SGX_LEAF, subleaf))
        if size is None:
            break
        total += size
    return total


def cpuinfo_has_sgx(text: str) -> bool:
    """Whether the `flags` line of /proc/cpuinfo lists sgx."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return "sgx" in value.split()
    return False


def device_reader(path: str = CPUID_DEVICE) -> CpuidReader:
    """A CPUID reader over the cpuid module's device file."""

    def read(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        with open(path, "rb", buffering=0) as device:
            device.seek(leaf | (subleaf << 32))
            data = device.read(16)
        if len(data) != 16:
            raise EpcError(f"{path}: short read of CPUID leaf {leaf:#x}.{subleaf}")
        eax, ebx, ecx, edx = struct.unpack("<4I", data)
        return eax, ebx, ecx, edx

    return read


def host_epc_mib(cpuinfo: str = CPUINFO, cpuid_device: str = CPUID_DEVICE) -> int:
    """The host's EPC in whole MiB; 0 on a host without SGX."""
    try:
        with open(cpuinfo) as info:
            has_sgx = cpuinfo_has_sgx(info.read())
    except OSError as error:
        raise EpcError(f"cannot read {cpuinfo}: {error.strerror}") from None
    if not has_sgx:
        return 0
    try:
        total = epc_bytes(device_reader(cpuid_device))
    except OSError as error:
        raise EpcError(
            f"the CPU has SGX but {cpuid_device} cannot be read ({error.strerror}): "
            "load the cpuid module (modprobe cpuid) or give the EPC size with --epc-mib"
        ) from None
    return total // MIB
