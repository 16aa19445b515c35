"""`builtin:native`: an unmodified Linux program from the image as a sim enclave.

The program runs as an ordinary process of the container, so the simulated TEE protects it
from nothing the host's root can do. What the runtime adds is the enclave's discipline:

- its code is measured: the program's bytes are checked against the signed manifest and
  copied into a sealed memory file, which is what is executed, so the bytes that run are
  the bytes that were checked (no file can be swapped in between);
- the process is hardened, as a best effort:
  * not dumpable: the memory file is execute-only, and the capabilities that would let the
    process read it anyway are left out of its effective set across execve, so the kernel
    makes the new program non-dumpable (no ptrace attach by its user, no core dump, /proc
    files of the process owned by root); the effective set comes back from the permitted
    set after execve for a root process, as always;
  * core dumps off (RLIMIT_CORE 0), no_new_privs;
  * a seccomp filter that refuses ptrace, process_vm_readv, process_vm_writev and
    pidfd_getfd with EPERM, when libseccomp is there;
- a program that needs an interpreter line (#!) is refused: the interpreter would read
  the script from a path, outside the measured memory file.

ENCLAVE_RUNTIME_ARGS: `debug` (log each process on standard error). Trusted files beyond
the entrypoint come from the signature (`enclave-sign sign --trusted PATH`).
"""

from __future__ import annotations

import os
import resource
from typing import NoReturn

from inclavare.enclave.runtimes.builtin import BuiltinRuntime, EnclaveRuntimeError
from inclavare.errors import InclavareError
from inclavare.linux import syscalls
from inclavare.linux.constants import PR_SET_NO_NEW_PRIVS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.tee.sim.measurement import Manifest

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_EXEC = 0x0010  # Linux 6.3+: say that the memory file is to be executed
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd")
EPERM = 1


class NativeRuntime(BuiltinRuntime):
    name = "builtin:native"
    gives_attestation_channel = True

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        self.seccomp_note = "seccomp: not loaded"
        self._seccomp_program: object | None = None  # keeps the BPF buffers alive
        self._seccomp_address = 0
        self._build_seccomp_filter()

    def _build_seccomp_filter(self) -> None:
        """Compile the enclave processes' filter to BPF now, while the host's libseccomp
        is reachable; children load the BPF with one prctl, which needs no library."""
        try:
            from inclavare.linux.seccomp import build_filter, compile_profile

            profile = compile_profile(
                {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [
                        {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}
                        for name in DENIED_SYSCALLS
                    ],
                }
            )
            bpf = build_filter(profile).bpf()
        except InclavareError as error:  # libseccomp missing or too old: harden without it
            self.seccomp_note = f"seccomp: not available ({error})"
            return
        import ctypes

        class _Program(ctypes.Structure):
            _fields_ = (("length", ctypes.c_ushort), ("filter", ctypes.c_void_p))

        if not bpf or len(bpf) % 8:
            self.seccomp_note = "seccomp: not available (libseccomp exported no program)"
            return
        instructions = ctypes.create_string_buffer(bpf, len(bpf))
        program = _Program(len(bpf) // 8, ctypes.addressof(instructions))
        self._seccomp_program = (instructions, program)
        self._seccomp_address = ctypes.addressof(program)
        self.seccomp_note = f"seccomp: {', '.join(DENIED_SYSCALLS)} refused"

    def _prepare(self, path: str, content: bytes) -> object:
        if content.startswith(b"#!"):
            raise EnclaveRuntimeError(
                f"{self.name}: {path} is a script; make its interpreter the program and the "
                "script a trusted file it reads"
            )
        if not content.startswith(b"\x7fELF"):
            raise EnclaveRuntimeError(f"{self.name}: {path} is not an ELF executable")
        fd = os.memfd_create(os.path.basename(path), MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o111)
            import fcntl

            fcntl.fcntl(
                fd,
                fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL,
            )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _release(self, prepared: object) -> None:
        assert isinstance(prepared, int)
        os.close(prepared)

    def _run(
        self, prepared: object, argv: list[str], env: list[str], report: int
    ) -> NoReturn:  # pragma: no cover - runs in the forked child
        assert isinstance(prepared, int)
        syscalls.prctl(PR_SET_DUMPABLE, 0, what="make the enclave process non-dumpable")
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")
        if self._seccomp_address:
            try:
                syscalls.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._seccomp_address)
            except OSError:
                pass  # a best effort, as the module says
        if self.debug:
            os.write(2, f"{self.name}: starting {argv[0]} (simulated enclave)\n".encode())
        _leave_out_read_override()
        environment = dict(entry.split("=", 1) for entry in env if "=" in entry)
        os.execve(prepared, argv, environment)


def _leave_out_read_override() -> None:  # pragma: no cover - runs in the forked child
    """Drop the capabilities that override read permission from the effective set only."""
    sets = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("CapInh", "CapPrm", "CapEff"):
                    sets[key] = int(value.strip(), 16)
    except OSError:
        return
    if len(sets) != 3:
        return
    effective = sets["CapEff"] & ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
    if effective != sets["CapEff"]:
        syscalls.capset(effective, sets["CapPrm"], sets["CapInh"])
