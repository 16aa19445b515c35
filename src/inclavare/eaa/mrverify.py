"""Reference values of a sim enclave computed from its image or bundle alone (`shelter
mrverify`), and the attestation policy that expects them.

A tenant who holds the image can compute, without running anything, what a genuine launch
of it must report: the MRENCLAVE, from the files the runtime loads; the MRSIGNER, from the
signer's public key; and, when the image carries a signature file, the ISVPRODID, ISVSVN and
DEBUG attribute it signs. A signed image is checked against its signature the way rune's
launch check does: every trusted file named by the signed manifest is hashed again from the
image, and a difference is named.

Everything here is about the simulated TEE (sim), which gives no protection against the
host's root; the policy it writes accepts simulated evidence only when asked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inclavare.enclave.convert import ConversionError, Program, image_program, measure_program
from inclavare.errors import InclavareError
from inclavare.oci.image import ImageError, ImageFileSystem, Layout
from inclavare.tee.sim.errors import MalformedStructure, SimError
from inclavare.tee.sim.files import (
    SIGNATURE_PATH,
    Root,
    TrustedFileError,
    collect_trusted_files,
    digest_or_none,
    find_entrypoint,
)
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity, TrustedFile
from inclavare.tee.sim.sigstruct import (
    EnclaveSignature,
    check_public_key,
    mr_signer_of,
    parse_signature_file,
)

SIM_NOTE = "simulated TEE (sim): no protection against the host's root"
DEFAULT_RUNTIME = "builtin:native"


class MrVerifyError(InclavareError):
    """The image, bundle, key or options cannot be used to compute reference values."""


class ImageSignatureMalformed(MrVerifyError):
    """The image's own signature file is unusable: the image disagrees with itself."""


@dataclass(frozen=True)
class ReferenceValues:
    """What a genuine launch of the enclave reports, and whether its image agrees with its
    signature."""

    source: str
    runtime_path: str | None
    runtime: RuntimeIdentity
    entrypoint: str | None
    manifest: Manifest  # recomputed from the image's files
    signature: EnclaveSignature | None
    key_mr_signer: bytes | None
    mismatches: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mr_enclave(self) -> bytes:
        return self.manifest.mr_enclave

    @property
    def mr_signer(self) -> bytes | None:
        if self.signature is not None:
            return self.signature.sigstruct.mr_signer
        return self.key_mr_signer

    @property
    def consistent(self) -> bool:
        return not self.mismatches

    def policy(self, allow_simulated: bool = False) -> dict[str, Any]:
        """The rules of an attestation policy (inclavare.attestation.policy) expecting this
        enclave: top-level rules, so that evidence from any TEE must match them."""
        rules: dict[str, Any] = {"tee": ["sim"], "mrenclave": [self.mr_enclave.hex()]}
        if self.mr_signer is not None:
            rules["mrsigner"] = [self.mr_signer.hex()]
        if self.signature is not None:
            sigstruct = self.signature.sigstruct
            rules["isv_prod_id"] = sigstruct.isv_prod_id
            rules["min_isv_svn"] = sigstruct.isv_svn
            rules["allow_debug"] = sigstruct.debug
        else:
            rules["allow_debug"] = False
        rules["allow_simulated"] = allow_simulated
        return rules

    def to_json(self) -> dict[str, Any]:
        sigstruct = self.signature.sigstruct if self.signature is not None else None
        return {
            "source": self.source,
            "tee": "sim",
            "simulated": True,
            "note": SIM_NOTE,
            "runtime_path": self.runtime_path,
            "runtime": str(self.runtime),
            "entrypoint": self.entrypoint,
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex() if self.mr_signer is not None else None,
            "signed": sigstruct is not None,
            "signed_mrenclave": sigstruct.enclave_hash.hex() if sigstruct else None,
            "isv_prod_id": sigstruct.isv_prod_id if sigstruct else None,
            "isv_svn": sigstruct.isv_svn if sigstruct else None,
            "debug": sigstruct.debug if sigstruct else None,
            "key_mrsigner": self.key_mr_signer.hex() if self.key_mr_signer else None,
            "consistent": self.consistent,
            "mismatches": list(self.mismatches),
            "notes": list(self.notes),
            "files": [
                {"path": file.path, "sha256": file.sha256.hex()} for file in self.manifest.files
            ],
        }

    def summary(self) -> str:
        sigstruct = self.signature.sigstruct if self.signature is not None else None
        lines = [
            f"reference values of {self.source}",
            f"TEE          {SIM_NOTE}",
            f"runtime      {self.runtime} ({self.runtime_path or 'from the signature'})",
            f"entrypoint   {self.entrypoint or '-'}",
            f"MRENCLAVE    {self.mr_enclave.hex()}",
        ]
        if self.mr_signer is not None:
            origin = "from the signature" if sigstruct else "from --key"
            if sigstruct and self.key_mr_signer is not None:
                origin += (
                    ", the key's" if self.key_mr_signer == self.mr_signer else ", not the key's"
                )
            lines.append(f"MRSIGNER     {self.mr_signer.hex()} ({origin})")
        else:
            lines.append("MRSIGNER     unknown (unsigned; give the signer's key with --key)")
        if sigstruct is not None:
            lines += [
                f"ISVPRODID    {sigstruct.isv_prod_id}",
                f"ISVSVN       {sigstruct.isv_svn}",
                f"DEBUG        {'yes' if sigstruct.debug else 'no'}",
            ]
        lines.append(f"trusted files ({len(self.manifest.files)}):")
        lines += [f"  {file.sha256.hex()}  {file.path}" for file in self.manifest.files]
        lines += [f"note: {note}" for note in self.notes]
        if self.mismatches:
            lines += [f"MISMATCH: {reason}" for reason in self.mismatches]
            lines.append("NOT CONSISTENT: the image disagrees with its signature")
        elif sigstruct is not None:
            lines.append("CONSISTENT: every trusted file matches the signature")
        return "\n".join(lines)


# --- inputs -----------------------------------------------------------------------------------


def signer_public_key(data: bytes, name: str) -> bytes:
    """MRSIGNER of the RSA-3072/e=3 key in `data`: a public key, a certificate or a private
    key, PEM or DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    loaders = (
        serialization.load_pem_public_key,
        lambda raw: x509.load_pem_x509_certificate(raw).public_key(),
        lambda raw: serialization.load_pem_private_key(raw, password=None).public_key(),
        serialization.load_der_public_key,
        lambda raw: x509.load_der_x509_certificate(raw).public_key(),
        lambda raw: serialization.load_der_private_key(raw, password=None).public_key(),
    )
    key: Any = None
    for loader in loaders:
        try:
            key = loader(data)
            break
        except (ValueError, TypeError):
            continue
    if key is None:
        raise MrVerifyError(
            f"--key {name}: not a public key, certificate or unencrypted private key"
        )
    if not isinstance(key, rsa.RSAPublicKey):
        raise MrVerifyError(f"--key {name}: not an RSA key (sim signs with RSA-3072, e=3)")
    numbers = key.public_numbers()
    try:
        check_public_key(numbers.n, numbers.e, f"--key {name}")
    except SimError as error:
        raise MrVerifyError(str(error)) from None
    return mr_signer_of(numbers.n)


def _runtime_path_of(env: Sequence[str], annotations: Mapping[str, Any]) -> str | None:
    found = None
    for entry in env:
        if entry.startswith("ENCLAVE_RUNTIME_PATH="):
            found = entry.split("=", 1)[1] or None
    if found is None:
        annotation = annotations.get("enclave.runtime.path")
        found = annotation if isinstance(annotation, str) and annotation else None
    return found


# --- the computation --------------------------------------------------------------------------


def reference_values(
    root: Root,
    program: Program,
    signature_bytes: bytes | None,
    source: str,
    runtime: str | None = None,
    trusted: Iterable[str] = (),
    key_mr_signer: bytes | None = None,
    configured_runtime: str | None = None,
) -> ReferenceValues:
    """The reference values of the enclave in `root` that runs `program`.

    `runtime` is the caller's choice, `configured_runtime` the one the image or bundle sets
    (ENCLAVE_RUNTIME_PATH); with neither, an unsigned enclave is measured for
    builtin:native and a signed one for the runtime its signature names.
    """
    trusted = list(trusted)
    runtime_path = runtime or configured_runtime
    if signature_bytes is None:
        notes = [
            "unsigned: rune would sign it at launch with a throwaway key as a debug enclave; "
            "sign it (enclave-sign convert) to get a stable MRSIGNER"
        ]
        if runtime_path is None:
            runtime_path = DEFAULT_RUNTIME
            notes.append(f"measured for {DEFAULT_RUNTIME}, the default (choose with --runtime)")
        try:
            manifest, entrypoint = measure_program(root, program, runtime_path, trusted)
        except ConversionError as error:
            raise MrVerifyError(str(error)) from None
        return ReferenceValues(
            source,
            runtime_path,
            manifest.runtime,
            entrypoint,
            manifest,
            None,
            key_mr_signer,
            notes=tuple(notes),
        )
    return _check_signed(
        root, program, signature_bytes, source, runtime_path, trusted, key_mr_signer
    )


def _check_signed(
    root: Root,
    program: Program,
    signature_bytes: bytes,
    source: str,
    runtime_path: str | None,
    trusted: list[str],
    key_mr_signer: bytes | None,
) -> ReferenceValues:
    mismatches: list[str] = []
    try:
        signature = parse_signature_file(signature_bytes)
    except MalformedStructure as error:
        raise ImageSignatureMalformed(
            f"the signature file /{SIGNATURE_PATH} is malformed: {error}"
        ) from None
    try:
        signature.verify()
    except SimError as error:
        mismatches.append(f"the signature does not verify: {error}")
    signed = signature.manifest
    identity = signed.runtime
    if runtime_path is not None:
        wanted = RuntimeIdentity.for_runtime_path(runtime_path)
        if wanted != signed.runtime:
            mismatches.append(
                f"it is signed for runtime {signed.runtime}, but runs with {wanted} "
                f"({runtime_path})"
            )
    found: list[TrustedFile] = []
    for file in signed.files:
        try:
            digest = digest_or_none(root, file.path)
        except (TrustedFileError, ImageError) as error:
            mismatches.append(str(error))
            continue
        if digest is None:
            mismatches.append(f"trusted file {file.path} is missing")
            continue
        if digest != file.sha256:
            mismatches.append(
                f"trusted file {file.path} differs from the signed measurement (signed SHA-256 "
                f"{file.sha256.hex()}, found {digest.hex()})"
            )
        found.append(TrustedFile(file.path, digest))
    for extra in collect_trusted_files(root, trusted):
        if signed.digest_of(extra.path) is None:
            mismatches.append(f"--trusted {extra.path} is not among the signed trusted files")
    entrypoint = None
    env = [entry for entry in program.env if not entry.startswith("ENCLAVE_")]
    argv0 = program.args[0] if program.args else ""
    try:
        entrypoint = find_entrypoint(root, argv0, env, program.cwd or "/")
    except (TrustedFileError, ImageError) as error:
        mismatches.append(f"the entrypoint: {error}")
    if entrypoint is not None and signed.digest_of(entrypoint) is None:
        mismatches.append(f"the entrypoint {entrypoint} is not among the trusted files")
    if key_mr_signer is not None and key_mr_signer != signature.sigstruct.mr_signer:
        mismatches.append(
            f"it is signed by MRSIGNER {signature.sigstruct.mr_signer.hex()}, not by --key "
            f"(MRSIGNER {key_mr_signer.hex()})"
        )
    manifest = Manifest.of(identity, found)
    if manifest.mr_enclave != signature.sigstruct.enclave_hash and not mismatches:
        mismatches.append("the recomputed MRENCLAVE differs from the signed one")
    return ReferenceValues(
        source,
        runtime_path,
        identity,
        entrypoint,
        manifest,
        signature,
        key_mr_signer,
        tuple(mismatches),
    )


def of_image(
    layout: str | os.PathLike[str],
    tag: str | None,
    runtime: str | None = None,
    trusted: Iterable[str] = (),
    key_mr_signer: bytes | None = None,
) -> ReferenceValues:
    """The reference values of an image in an OCI layout, from its layers."""
    image = Layout.open(layout).image(tag)
    try:
        program = image_program(image.runtime_config)
    except ConversionError as error:
        raise MrVerifyError(str(error)) from None
    with image.filesystem() as filesystem:
        signature_bytes = _image_signature(filesystem)
        return reference_values(
            filesystem,
            program,
            signature_bytes,
            f"image {image.name} ({image.descriptor.digest})",
            runtime,
            trusted,
            key_mr_signer,
            _runtime_path_of(program.env, {}),
        )


def _image_signature(filesystem: ImageFileSystem) -> bytes | None:
    path = "/" + SIGNATURE_PATH
    if filesystem.kind(filesystem.resolve(path)) is None:
        return None
    return filesystem.read_file(path)


def of_bundle(
    bundle: str | os.PathLike[str],
    runtime: str | None = None,
    trusted: Iterable[str] = (),
    key_mr_signer: bytes | None = None,
) -> ReferenceValues:
    """The reference values of an OCI bundle, from its root file system."""
    path = Path(bundle)
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_bytes())
    except OSError as error:
        raise MrVerifyError(f"cannot read {config_path}: {error.strerror}") from None
    except ValueError:
        raise MrVerifyError(f"{config_path} is not valid JSON") from None
    process = config.get("process") if isinstance(config, dict) else None
    root = config.get("root") if isinstance(config, dict) else None
    root_path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(process, dict) or not isinstance(root_path, str) or not root_path:
        raise MrVerifyError(f"{config_path} has no process or no root.path")
    args, env = process.get("args") or [], process.get("env") or []
    cwd = process.get("cwd") or "/"
    if not isinstance(args, list) or not isinstance(env, list) or not isinstance(cwd, str):
        raise MrVerifyError(f"{config_path}: malformed process.args, process.env or cwd")
    rootfs = path / root_path
    if not rootfs.is_dir():
        raise MrVerifyError(f"the bundle's root file system {rootfs} is not a directory")
    try:
        signature_bytes: bytes | None = (rootfs / SIGNATURE_PATH).read_bytes()
    except FileNotFoundError:
        signature_bytes = None
    except OSError as error:
        raise MrVerifyError(f"cannot read the signature file: {error.strerror}") from None
    annotations = config.get("annotations") or {}
    return reference_values(
        str(rootfs),
        Program([str(arg) for arg in args], [str(entry) for entry in env], cwd),
        signature_bytes,
        f"bundle {path}",
        runtime,
        trusted,
        key_mr_signer,
        _runtime_path_of(env, annotations if isinstance(annotations, dict) else {}),
    )


# --- the policy file --------------------------------------------------------------------------


def render_policy(values: ReferenceValues, allow_simulated: bool, json_format: bool) -> bytes:
    """The policy file text, checked by loading it with inclavare.attestation.policy."""
    from inclavare.attestation.policy import load_policy

    rules = values.policy(allow_simulated)
    if json_format:
        text = json.dumps(rules, indent=2) + "\n"
    else:
        lines = [
            f"# Reference values computed by `shelter mrverify` from {values.source}",
            f"# {SIM_NOTE}",
            "# allow_simulated accepts evidence from the simulated TEE; keep it false for hardware",
        ]
        lines += [f"{key} = {_toml(value)}" for key, value in rules.items()]
        text = "\n".join(lines) + "\n"
    data = text.encode()
    load_policy(data, "policy.json" if json_format else "policy.toml")
    return data


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))
