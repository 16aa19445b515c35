"""Turn an ordinary container into a sim enclave container: an OCI bundle in place, or an
OCI image into a new image.

Conversion measures what the enclave runtime will load (the entrypoint, `process.args[0]`
found in the container's PATH, and the trusted paths), signs the measurement (SIGSTRUCT,
RSA-3072 with exponent 3) and leaves three things behind: the signature file
`/.inclavare/enclave.sig` in the root file system, and `ENCLAVE_TYPE=sim` and
`ENCLAVE_RUNTIME_PATH=<runtime>` in the process environment, which is all rune needs to
launch the container as an enclave and to check it at every launch.

An image is measured from its layers without extracting them; the converted image is the
base image (its blobs shared) plus one layer holding the signature file, with the two
variables added to its config's Env. The key can stay elsewhere: a `signer` callable signs
the SIGSTRUCT (see `inclavare.tee.sim.sigstruct.Signer`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inclavare.enclave.config import BUILTIN_NATIVE, BUILTIN_RUNTIMES, BUILTIN_WASM
from inclavare.errors import InclavareError
from inclavare.oci.image import Descriptor, ImageFileSystem, Layout, build_layer, write_layout
from inclavare.tee.sim.files import (
    SIGNATURE_PATH,
    Root,
    TrustedFileError,
    find_entrypoint,
    measure,
    resolve_in_root,
    write_signature,
)
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity
from inclavare.tee.sim.sigstruct import EnclaveSignature, Signer, key_signer, sign_enclave_with

ENCLAVE_ENV_KEYS = ("ENCLAVE_TYPE", "ENCLAVE_RUNTIME_PATH")
WASM_MAGIC = b"\0asm"


class ConversionError(InclavareError):
    """A container or image cannot be converted into an enclave."""


@dataclass(frozen=True)
class Conversion:
    """The result of a conversion: the enclave's signature and where it starts."""

    runtime_path: str
    entrypoint: str
    signature: EnclaveSignature
    image: Descriptor | None = None  # the converted image's manifest

    @property
    def manifest(self) -> Manifest:
        return self.signature.manifest

    @property
    def mr_enclave(self) -> bytes:
        return self.signature.sigstruct.enclave_hash

    @property
    def mr_signer(self) -> bytes:
        return self.signature.sigstruct.mr_signer

    def to_json(self) -> dict[str, Any]:
        sigstruct = self.signature.sigstruct
        document: dict[str, Any] = {
            "tee": "sim",
            "simulated": True,
            "runtime_path": self.runtime_path,
            "runtime": str(self.manifest.runtime),
            "entrypoint": self.entrypoint,
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex(),
            "isv_prod_id": sigstruct.isv_prod_id,
            "isv_svn": sigstruct.isv_svn,
            "debug": sigstruct.debug,
            "files": [
                {"path": file.path, "sha256": file.sha256.hex()} for file in self.manifest.files
            ],
        }
        if self.image is not None:
            document["image"] = {"digest": self.image.digest, "size": self.image.size}
        return document

    def describe(self) -> str:
        sigstruct = self.signature.sigstruct
        return (
            f"simulated enclave (sim TEE, no protection against the host's root), runtime "
            f"{self.runtime_path}, entrypoint {self.entrypoint}, "
            f"{len(self.manifest.files)} trusted file(s)\n"
            f"MRENCLAVE {self.mr_enclave.hex()}\n"
            f"MRSIGNER  {self.mr_signer.hex()}\n"
            f"ISVPRODID {sigstruct.isv_prod_id}  ISVSVN {sigstruct.isv_svn}  "
            + ("debug" if sigstruct.debug else "production")
        )


@dataclass(frozen=True)
class Program:
    """What a container runs: its argv, environment and working directory."""

    args: Sequence[str]
    env: Sequence[str]
    cwd: str = "/"


def check_runtime(runtime_path: str) -> RuntimeIdentity:
    """The identity of a runtime conversion supports (the built-in ones)."""
    if runtime_path not in BUILTIN_RUNTIMES:
        raise ConversionError(
            f"unknown enclave runtime {runtime_path!r} (conversion supports "
            f"{', '.join(BUILTIN_RUNTIMES)})"
        )
    return RuntimeIdentity.for_runtime_path(runtime_path)


def measure_program(
    root: Root, program: Program, runtime_path: str, trusted: Iterable[str] = ()
) -> tuple[Manifest, str]:
    """The manifest of the enclave that runs `program` from `root` with the runtime, and
    the entrypoint's path."""
    identity = check_runtime(runtime_path)
    if not program.args or not program.args[0]:
        raise ConversionError("the container has no program to run (no Entrypoint or Cmd)")
    env = [entry for entry in program.env if not entry.startswith("ENCLAVE_")]
    entrypoint = find_entrypoint(root, program.args[0], env, program.cwd or "/")
    manifest = measure(root, identity, [entrypoint, *trusted])
    _check_entrypoint(_head(root, entrypoint), entrypoint, runtime_path)
    return manifest, entrypoint


def _head(root: Root, path: str) -> bytes:
    if isinstance(root, ImageFileSystem):
        return next(iter(root.chunks(path)), b"")[:4]
    assert isinstance(root, (str, os.PathLike))
    try:
        with open(resolve_in_root(root, path), "rb") as stream:
            return stream.read(4)
    except OSError as error:
        raise TrustedFileError(f"cannot read {path}: {error.strerror}") from None


def _check_entrypoint(head: bytes, entrypoint: str, runtime_path: str) -> None:
    if runtime_path == BUILTIN_NATIVE and head.startswith(b"#!"):
        raise ConversionError(
            f"{entrypoint} is a script (#!), which {BUILTIN_NATIVE} cannot run: make its "
            "interpreter the program and the script a trusted file"
        )
    if runtime_path == BUILTIN_WASM and head != WASM_MAGIC:
        raise ConversionError(f"{entrypoint} is not a WebAssembly module for {BUILTIN_WASM}")


def _signer(key_pem: bytes | None, signer: Signer | None) -> Signer:
    if signer is not None:
        return signer
    if key_pem is None:
        raise ConversionError("a signing key (or a signer) is needed to convert")
    return key_signer(key_pem)


def enclave_env(env: Sequence[str], runtime_path: str) -> list[str]:
    """`env` without ENCLAVE_TYPE/ENCLAVE_RUNTIME_PATH entries, then the sim ones."""
    kept = [entry for entry in env if entry.split("=", 1)[0] not in ENCLAVE_ENV_KEYS]
    return [*kept, "ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={runtime_path}"]


# --- bundles ----------------------------------------------------------------------------------


def convert_bundle(
    bundle: str | os.PathLike[str],
    runtime: str = BUILTIN_NATIVE,
    trusted: Iterable[str] = (),
    key_pem: bytes | None = None,
    signer: Signer | None = None,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    debug: bool = False,
    sign: Callable[[Manifest], EnclaveSignature] | None = None,
) -> Conversion:
    """Make the OCI bundle a signed sim enclave in place. `sign`, when given, makes the
    signature of the measured manifest (a cache in front of a signer, say) instead of
    `key_pem`/`signer`."""
    path = Path(bundle)
    config_path = path / "config.json"
    config = _read_config(config_path)
    process = config.get("process")
    root = config.get("root")
    root_path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(root_path, str) or not root_path:
        raise ConversionError(f"{config_path} has no root.path")
    if not isinstance(process, dict):
        raise ConversionError(f"{config_path} has no process")
    args, env, cwd = process.get("args") or [], process.get("env") or [], process.get("cwd") or "/"
    if not _strings(args) or not _strings(env) or not isinstance(cwd, str):
        raise ConversionError(f"{config_path}: malformed process.args, process.env or process.cwd")
    rootfs = path / root_path
    if not rootfs.is_dir():
        raise ConversionError(f"the bundle's root file system {rootfs} is not a directory")
    signature_directory = rootfs / os.path.dirname(SIGNATURE_PATH)
    if signature_directory.is_symlink():
        raise ConversionError(
            f"{signature_directory} is a symbolic link: the signature is not written through it"
        )
    manifest, entrypoint = measure_program(str(rootfs), Program(args, env, cwd), runtime, trusted)
    if sign is not None:
        signature = sign(manifest)
    else:
        signature = sign_enclave_with(
            _signer(key_pem, signer), manifest, isv_prod_id, isv_svn, debug
        )
    try:
        write_signature(rootfs / SIGNATURE_PATH, signature)
    except OSError as error:
        raise ConversionError(
            f"cannot write the signature into {rootfs}: {error.strerror}"
        ) from None
    process["env"] = enclave_env(env, runtime)
    _write_config(config_path, config)
    return Conversion(runtime, entrypoint, signature)


def bundle_program(bundle: str | os.PathLike[str]) -> tuple[Path, Program]:
    """The root file system of an OCI bundle and the program its config runs."""
    path = Path(bundle)
    config_path = path / "config.json"
    config = _read_config(config_path)
    process = config.get("process")
    root = config.get("root")
    root_path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(root_path, str) or not root_path or not isinstance(process, dict):
        raise ConversionError(f"{config_path} has no root.path or no process")
    args, env, cwd = process.get("args") or [], process.get("env") or [], process.get("cwd") or "/"
    if not _strings(args) or not _strings(env) or not isinstance(cwd, str):
        raise ConversionError(f"{config_path}: malformed process.args, process.env or process.cwd")
    return path / root_path, Program(args, env, cwd)


def set_enclave_env(bundle: str | os.PathLike[str], runtime: str) -> None:
    """Write the sim enclave's variables into the bundle's process environment."""
    config_path = Path(bundle) / "config.json"
    config = _read_config(config_path)
    process = config.get("process")
    if not isinstance(process, dict) or not _strings(process.get("env") or []):
        raise ConversionError(f"{config_path}: malformed process.env")
    process["env"] = enclave_env(process.get("env") or [], runtime)
    _write_config(config_path, config)


def _write_config(config_path: Path, config: dict[str, Any]) -> None:
    temporary = config_path.with_name(f".config.json.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(temporary, flags, 0o644), "w") as stream:
            stream.write(json.dumps(config, indent=2))
        temporary.replace(config_path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ConversionError(f"cannot write {config_path}: {error.strerror}") from None


def _read_config(config_path: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_path.read_bytes())
    except OSError as error:
        raise ConversionError(f"cannot read {config_path}: {error.strerror}") from None
    except ValueError as error:
        raise ConversionError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{config_path} is not a JSON object")
    return config


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# --- images -----------------------------------------------------------------------------------


def image_program(settings: Any) -> Program:
    """What a container of an image runs, from its config (Entrypoint + Cmd, Env,
    WorkingDir)."""
    entrypoint = settings.get("Entrypoint") or []
    command = settings.get("Cmd") or []
    env = settings.get("Env") or []
    cwd = settings.get("WorkingDir") or "/"
    if not (_strings(entrypoint) and _strings(command) and _strings(env)) or not isinstance(
        cwd, str
    ):
        raise ConversionError("the image config's Entrypoint, Cmd, Env or WorkingDir is malformed")
    return Program([*entrypoint, *command], env, cwd)


def convert_image(
    source: str | os.PathLike[str],
    source_tag: str | None,
    destination: str | os.PathLike[str],
    destination_tag: str | None = None,
    runtime: str = BUILTIN_NATIVE,
    trusted: Iterable[str] = (),
    key_pem: bytes | None = None,
    signer: Signer | None = None,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    debug: bool = False,
) -> Conversion:
    """Write to `destination` the image `source` converted into a signed sim enclave image.
    The destination tag defaults to the source's (or "latest")."""
    image = Layout.open(source).image(source_tag)
    program = image_program(image.runtime_config)
    with image.filesystem() as filesystem:
        manifest, entrypoint = measure_program(filesystem, program, runtime, trusted)
    signature = sign_enclave_with(_signer(key_pem, signer), manifest, isv_prod_id, isv_svn, debug)
    layer = build_layer({"/" + SIGNATURE_PATH: signature.encode()})
    descriptor = write_layout(
        image,
        destination,
        destination_tag or source_tag or "latest",
        layer,
        enclave_env([], runtime),
        created_by=(
            f"enclave-sign convert-image: sim enclave signature, runtime {runtime}, "
            f"MRENCLAVE {signature.sigstruct.enclave_hash.hex()}"
        ),
    )
    return Conversion(runtime, entrypoint, signature, descriptor)
