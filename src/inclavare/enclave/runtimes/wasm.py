"""`builtin:wasm`: WebAssembly (WASI preview 1) programs as sim enclaves, run by wasmtime.

The program (process.args[0]) is a .wasm module of the image: it is the measured content,
checked against the signed manifest right before each start and compiled from the checked
bytes. Each enclave process is a forked child of the init-runelet that instantiates the
module with:

- argv and environment as given (argv[0] is the module's path);
- standard input, output and error as given (the container's, or those `rune exec`
  passed);
- preopened directories of the container's root file system: `/` unless the runtime
  arguments name others (ENCLAVE_RUNTIME_ARGS `dir=/data,dir=/tmp`), each under its own
  path.

The process's exit status is the module's proc_exit code, 0 when _start returns, and 134
(as a process that aborted) when the module traps; the trap is reported on standard error.

wasmtime is imported by `WasmRuntime()`, in the container's init before pivot_root, and
only for builtin:wasm containers.
"""

from __future__ import annotations

import os

from inclavare.enclave.runtimes.builtin import BuiltinRuntime, EnclaveRuntimeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.tee.sim.measurement import Manifest

TRAP_EXIT_CODE = 134


class WasmRuntime(BuiltinRuntime):
    name = "builtin:wasm"
    ARGUMENTS = ("debug", "dir")

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        import wasmtime

        self._wasmtime = wasmtime
        config = wasmtime.Config()
        # Compilation on the calling thread only: enclave processes are forked, and a
        # compiler's worker threads would not exist in the child.
        config.parallel_compilation = False
        # Explicit bounds checks instead of fault handlers: enclave processes start with
        # default signal dispositions, and handlers installed here would not be there.
        config.signals_based_traps = False
        # Memory images in memory files would be descriptors the children need; they
        # close every descriptor they do not (see _run).
        config.memory_init_cow = False
        self._engine = wasmtime.Engine(config)
        self.directories: list[str] = ["/"]

    def _configure(self, options: list[tuple[str, str]]) -> None:
        super()._configure(options)
        directories = [value for key, value in options if key == "dir"]
        for directory in directories:
            if not directory.startswith("/"):
                raise EnclaveRuntimeError(
                    f"{self.name}: dir={directory}: give an absolute path in the container"
                )
        if directories:
            self.directories = directories

    def _prepare(self, path: str, content: bytes) -> object:
        try:
            return self._wasmtime.Module(self._engine, content)
        except self._wasmtime.WasmtimeError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else "invalid"
            raise EnclaveRuntimeError(
                f"{self.name}: {path} is not a valid WebAssembly module: {first}"
            ) from None

    def _run(
        self, prepared: object, argv: list[str], env: list[str], report: int
    ) -> int:  # pragma: no cover - runs in the forked child
        wasmtime = self._wasmtime
        assert isinstance(prepared, wasmtime.Module)
        # The child does not execute a program, so nothing closes the init-runelet's
        # descriptors (the agent socket, exec.fifo, other callers' stdio): close them.
        os.closerange(3, report)
        os.closerange(report + 1, 1 << 20)
        wasi = wasmtime.WasiConfig()
        wasi.argv = argv
        wasi.env = [entry.split("=", 1) for entry in env if "=" in entry]
        wasi.inherit_stdin()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        for directory in self.directories:
            wasi.preopen_dir(directory, directory)
        store = wasmtime.Store(self._engine)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(self._engine)
        linker.define_wasi()
        try:
            instance = linker.instantiate(store, prepared)
        except wasmtime.WasmtimeError as error:
            raise EnclaveRuntimeError(
                f"{argv[0]}: cannot instantiate: {_first_line(error)}"
            ) from None
        start = instance.exports(store).get("_start")
        if not isinstance(start, wasmtime.Func):
            raise EnclaveRuntimeError(f"{argv[0]}: the module exports no _start function")
        if self.debug:
            os.write(2, f"{self.name}: starting {argv[0]} (simulated enclave)\n".encode())
        os.close(report)  # started: nothing more to report
        try:
            start(store)
        except wasmtime.ExitTrap as exit_trap:
            return int(exit_trap.code)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as error:
            os.write(2, f"{self.name}: {argv[0]} trapped: {_cause(error)}\n".encode())
            return TRAP_EXIT_CODE
        return 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _cause(error: BaseException) -> str:
    """The reason of a wasmtime error, without its backtrace: the first line after
    "Caused by:" (less its "0: " numbering), or the first line."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    if "Caused by:" in lines:
        causes = [line for line in lines[lines.index("Caused by:") + 1 :] if line]
        if causes:
            number, separator, rest = causes[0].partition(": ")
            return rest if separator and number.isdigit() else causes[0]
    return _first_line(error)
