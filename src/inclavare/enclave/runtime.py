"""The operations of an enclave runtime, whether a PAL shared object or built into rune.

They mirror the PAL ABI (version 3): init-runelet drives every runtime through them, in
this order: `init` once at create time, then for the entrypoint and each `rune exec`
`create_process` followed by `exec` (which waits for the process), `kill` to signal one of
those processes, `get_local_report` for `rune attest`, and `destroy` at the end.

Failures are `InclavareError`s whose message names the runtime and the operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# Standard input, output and error of a process: file descriptors of the caller, -1 for
# "the runtime's own".
Stdio = tuple[int, int, int]


class EnclaveRuntime(Protocol):
    @property
    def api_version(self) -> int:
        """The PAL API version the runtime implements (built-in runtimes: 3)."""
        ...

    def init(self, args: str, log_level: str, launch_record: bytes | None = None) -> None:
        """Prepare the enclave. `args` is ENCLAVE_RUNTIME_ARGS (comma separated);
        `launch_record` is what the launch check of the TEE produced for this enclave
        (tee/sim/launch.py), or None when no enclave was launched for the runtime."""
        ...

    def create_process(
        self, path: str, argv: Sequence[str], env: Sequence[str], stdio: Stdio
    ) -> int:
        """Start `path` inside the enclave; return its process id."""
        ...

    def exec(self, pid: int) -> int:
        """Wait for process `pid` to end; return its exit status (128 + signal if killed)."""
        ...

    def kill(self, pid: int, signal: int) -> None:
        """Send `signal` to process `pid` of this enclave."""
        ...

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        """A 432-byte SGX report of the enclave for `target_info` (512 bytes), carrying
        `report_data` (at most 64 bytes)."""
        ...

    def destroy(self) -> None:
        """Tear the enclave down."""
        ...
