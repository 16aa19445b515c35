"""The enclave runtimes built into rune: `builtin:native` and `builtin:wasm`.

Both run on the simulated TEE and implement the operations of `EnclaveRuntime`
(enclave/runtime.py) with PAL API version 3. Each enclave process is a child of the
container's init-runelet: the runtime checks, right before it starts one, that every
trusted file of the enclave is still what was signed and that the program is one of them,
then forks. `load_runtime` gives the runtime for ENCLAVE_RUNTIME_PATH.
"""

from __future__ import annotations

from inclavare.enclave.config import BUILTIN_NATIVE, BUILTIN_WASM

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.enclave.runtime import EnclaveRuntime
    from inclavare.tee.sim.measurement import Manifest


def load_runtime(runtime_path: str, manifest: Manifest | None) -> EnclaveRuntime:
    """The runtime at `runtime_path`: a built-in one, or the PAL shared object there.

    `manifest` is what the launch check accepted (None when no enclave was launched, as for
    a PAL on real SGX). Call it before pivot_root: a PAL is loaded from the host.
    """
    if runtime_path == BUILTIN_NATIVE:
        from inclavare.enclave.runtimes.native import NativeRuntime

        return NativeRuntime(_required(manifest, runtime_path))
    if runtime_path == BUILTIN_WASM:
        from inclavare.enclave.runtimes.wasm import WasmRuntime

        return WasmRuntime(_required(manifest, runtime_path))
    from inclavare.enclave.pal import load_pal

    return load_pal(runtime_path)


def _required(manifest: Manifest | None, runtime_path: str) -> Manifest:
    if manifest is None:
        from inclavare.errors import InclavareError

        raise InclavareError(f"the enclave runtime {runtime_path} runs launched sim enclaves only")
    return manifest
