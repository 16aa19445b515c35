"""`enclave-sign`: measure and sign the enclave of an OCI bundle for the simulated TEE.

    enclave-sign genkey KEY                       a new RSA-3072 key, exponent 3 (as SGX)
    enclave-sign measure BUNDLE [--runtime ID] [--trusted PATH]... [--json]
    enclave-sign sign BUNDLE --key KEY [--runtime ID] [--trusted PATH]...
                      [--isvprodid N] [--isvsvn N] [--debug] [--output FILE]
    enclave-sign verify BUNDLE [--signature FILE] [--runtime ID] [--json]
    enclave-sign convert BUNDLE --key KEY [--runtime RUNTIME] [--trusted PATH]... [...]
    enclave-sign convert-image SRC[:TAG] DST[:TAG] --key KEY [--runtime RUNTIME] [...]

`convert` and `convert-image` turn an ordinary bundle (in place) or OCI image layout (into a
new image) into a signed sim enclave: they measure and sign for RUNTIME (builtin:native by
default, or builtin:wasm), write the signature file and set ENCLAVE_TYPE=sim and
ENCLAVE_RUNTIME_PATH in the process environment (the image config's Env).

The trusted files are the container's entrypoint (process.args[0], searched in its PATH)
and every --trusted path inside the root file system (a directory stands for every file
below it). The runtime identity defaults to the bundle's enclave runtime
(ENCLAVE_RUNTIME_PATH or the enclave.runtime.path annotation). The signature file goes to
ROOTFS/.inclavare/enclave.sig, where rune looks for it at launch.

Exit codes: 0 success, 1 the enclave does not verify, 2 bad input. Errors are one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.enclave.convert import Conversion
    from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity
    from inclavare.tee.sim.sigstruct import EnclaveSignature

PROGRAM = "enclave-sign"
EXIT_OK = 0
EXIT_NOT_VERIFIED = 1
EXIT_USAGE = 2


class UsageError(InclavareError):
    """A command-line input is missing, unreadable or malformed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Measure and sign enclave bundles for the simulated TEE (sim). The signature "
            "follows SGX's SIGSTRUCT; sim itself gives no protection against the host's root."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    genkey = commands.add_parser(
        "genkey", help="create an RSA-3072 signing key with exponent 3 (PEM, mode 0600)"
    )
    genkey.add_argument("key", metavar="KEY", help="file to create")
    genkey.add_argument("--force", action="store_true", help="replace an existing file")
    genkey.set_defaults(run=run_genkey)

    measure = commands.add_parser(
        "measure", help="print the MRENCLAVE of a bundle's enclave and its trusted files"
    )
    _bundle_arguments(measure)
    measure.add_argument("--json", action="store_true", help="print one JSON object")
    measure.set_defaults(run=run_measure)

    sign = commands.add_parser("sign", help="measure a bundle and write its signature file")
    _bundle_arguments(sign)
    sign.add_argument("--key", metavar="KEY", required=True, help="RSA-3072/e=3 private key")
    sign.add_argument("--isvprodid", metavar="N", type=int, default=0, help="product id (0)")
    sign.add_argument("--isvsvn", metavar="N", type=int, default=0, help="security version (0)")
    sign.add_argument("--debug", action="store_true", help="sign a debug enclave")
    sign.add_argument(
        "--output", metavar="FILE", help="signature file (default ROOTFS/.inclavare/enclave.sig)"
    )
    sign.set_defaults(run=run_sign)

    verify = commands.add_parser(
        "verify", help="run the launch check on a bundle and print its signature"
    )
    verify.add_argument("bundle", metavar="BUNDLE", help="OCI bundle directory")
    verify.add_argument(
        "--signature", metavar="FILE", help="signature file (default ROOTFS/.inclavare/enclave.sig)"
    )
    verify.add_argument("--runtime", metavar="ID", help=RUNTIME_HELP)
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(run=run_verify)

    convert = commands.add_parser(
        "convert", help="make an OCI bundle a signed sim enclave container, in place"
    )
    convert.add_argument("bundle", metavar="BUNDLE", help="OCI bundle directory")
    _conversion_arguments(convert)
    convert.set_defaults(run=run_convert)

    convert_image = commands.add_parser(
        "convert-image", help="convert an OCI image (layout directory) into a sim enclave image"
    )
    convert_image.add_argument("source", metavar="SRC[:TAG]", help="OCI image layout and tag")
    convert_image.add_argument(
        "destination",
        metavar="DST[:TAG]",
        help="OCI image layout to write (created if absent; may be SRC) and tag (default SRC's)",
    )
    _conversion_arguments(convert_image)
    convert_image.set_defaults(run=run_convert_image)
    return parser


def _conversion_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--key", metavar="KEY", required=True, help="RSA-3072/e=3 private key")
    command.add_argument(
        "--runtime",
        metavar="RUNTIME",
        default="builtin:native",
        help="enclave runtime (ENCLAVE_RUNTIME_PATH): builtin:native (default) or builtin:wasm",
    )
    command.add_argument(
        "--trusted",
        metavar="PATH",
        action="append",
        default=[],
        help="another trusted file or directory, as a path inside the container",
    )
    command.add_argument("--isvprodid", metavar="N", type=int, default=0, help="product id (0)")
    command.add_argument("--isvsvn", metavar="N", type=int, default=0, help="security version (0)")
    command.add_argument("--debug", action="store_true", help="sign a debug enclave")
    command.add_argument("--json", action="store_true", help="print one JSON object")


RUNTIME_HELP = (
    "runtime identity NAME or NAME@VERSION (default: from the bundle's enclave runtime, "
    "e.g. builtin:native@1 or pal:liberpal-skeleton-v3.so)"
)


def _bundle_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("bundle", metavar="BUNDLE", help="OCI bundle directory")
    command.add_argument("--runtime", metavar="ID", help=RUNTIME_HELP)
    command.add_argument(
        "--trusted",
        metavar="PATH",
        action="append",
        default=[],
        help="another trusted file or directory, as a path inside the container",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from inclavare.cli import run_subcommand

    return run_subcommand(build_parser(), argv, PROGRAM)


# --- commands ---------------------------------------------------------------------------------


def run_genkey(args: argparse.Namespace) -> int:
    from inclavare.tee.sim.sigstruct import generate_signing_key

    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(args.key, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{args.key} exists (give --force to replace it)") from None
    except OSError as error:
        raise UsageError(f"cannot create {args.key}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as stream:
        stream.write(generate_signing_key())
    os.chmod(args.key, 0o600)
    print(f"wrote an RSA-3072 (exponent 3) enclave signing key to {args.key}")
    return EXIT_OK


def run_measure(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    manifest = _measure(bundle, args)
    if args.json:
        print(json.dumps(_manifest_json(manifest), indent=2))
    else:
        print(f"MRENCLAVE {manifest.mr_enclave.hex()} (simulated TEE measurement)")
        print(f"runtime {manifest.runtime}")
        for file in manifest.files:
            print(f"{file.sha256.hex()}  {file.path}")
    return EXIT_OK


def run_sign(args: argparse.Namespace) -> int:
    from inclavare.tee.sim.files import write_signature
    from inclavare.tee.sim.sigstruct import sign_enclave

    bundle = Bundle.open(args.bundle)
    manifest = _measure(bundle, args)
    key = _read(args.key, "the key")
    signature = sign_enclave(key, manifest, args.isvprodid, args.isvsvn, args.debug)
    output = args.output or bundle.signature_path
    try:
        write_signature(output, signature)
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror}") from None
    sigstruct = signature.sigstruct
    print(
        f"signed {len(manifest.files)} trusted file(s) for runtime {manifest.runtime} "
        f"(simulated TEE signature)\n"
        f"MRENCLAVE {sigstruct.enclave_hash.hex()}\n"
        f"MRSIGNER  {sigstruct.mr_signer.hex()}\n"
        f"ISVPRODID {sigstruct.isv_prod_id}  ISVSVN {sigstruct.isv_svn}  "
        f"{'debug' if sigstruct.debug else 'production'}\n"
        f"wrote {output}"
    )
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from inclavare.tee.sim.errors import LaunchRefused
    from inclavare.tee.sim.files import digest_or_none, read_signature
    from inclavare.tee.sim.launch import check_launch

    bundle = Bundle.open(args.bundle)
    path = args.signature or bundle.signature_path
    signature = read_signature(path)
    if signature is None:
        raise UsageError(f"no signature file at {path}")
    runtime = _runtime(bundle, args.runtime, default=signature.manifest.runtime)
    measured = {name: digest_or_none(bundle.rootfs, name) for name in signature.manifest.paths}
    document = _signature_json(signature)
    try:
        outcome = check_launch(signature, runtime, measured).describe()
        document["launch"] = "allowed"
        code = EXIT_OK
    except LaunchRefused as refusal:
        outcome = str(refusal)
        document.update(launch="refused", reason=outcome)
        code = EXIT_NOT_VERIFIED
    print(json.dumps(document, indent=2) if args.json else outcome)
    return code


def run_convert(args: argparse.Namespace) -> int:
    from inclavare.enclave.convert import convert_bundle

    conversion = convert_bundle(
        args.bundle,
        args.runtime,
        args.trusted,
        key_pem=_read(args.key, "the key"),
        isv_prod_id=args.isvprodid,
        isv_svn=args.isvsvn,
        debug=args.debug,
    )
    _print_conversion(conversion, args.json, f"converted bundle {args.bundle}")
    return EXIT_OK


def run_convert_image(args: argparse.Namespace) -> int:
    from inclavare.enclave.convert import convert_image
    from inclavare.oci.image import parse_reference

    source, source_tag = parse_reference(args.source)
    destination, destination_tag = parse_reference(args.destination)
    conversion = convert_image(
        source,
        source_tag,
        destination,
        destination_tag,
        args.runtime,
        args.trusted,
        key_pem=_read(args.key, "the key"),
        isv_prod_id=args.isvprodid,
        isv_svn=args.isvsvn,
        debug=args.debug,
    )
    tag = destination_tag or source_tag or "latest"
    assert conversion.image is not None
    _print_conversion(
        conversion, args.json, f"wrote {destination}:{tag} (manifest {conversion.image.digest})"
    )
    return EXIT_OK


def _print_conversion(conversion: Conversion, as_json: bool, done: str) -> None:
    if as_json:
        print(json.dumps(conversion.to_json(), indent=2))
    else:
        print(f"{conversion.describe()}\n{done}")


# --- the bundle -------------------------------------------------------------------------------


class Bundle:
    """An OCI bundle: its config.json (as a dict) and its root file system."""

    def __init__(self, path: Path, config: dict[str, object]) -> None:
        self.path = path
        self.config = config

    @classmethod
    def open(cls, directory: str) -> Bundle:
        path = Path(directory)
        config_path = path / "config.json"
        try:
            config = json.loads(config_path.read_bytes())
        except OSError as error:
            raise UsageError(f"cannot read {config_path}: {error.strerror}") from None
        except ValueError as error:
            raise UsageError(f"{config_path} is not valid JSON: {error}") from None
        if not isinstance(config, dict):
            raise UsageError(f"{config_path} is not a JSON object")
        return cls(path, config)

    @property
    def rootfs(self) -> str:
        root = self.config.get("root")
        root_path = root.get("path") if isinstance(root, dict) else None
        if not isinstance(root_path, str) or not root_path:
            raise UsageError(f"{self.path}/config.json has no root.path")
        return str(self.path / root_path)

    @property
    def signature_path(self) -> str:
        from inclavare.tee.sim.files import SIGNATURE_PATH

        return os.path.join(self.rootfs, SIGNATURE_PATH)

    def entrypoint(self) -> str:
        from inclavare.tee.sim.files import find_entrypoint

        process = self.config.get("process")
        if not isinstance(process, dict):
            raise UsageError(f"{self.path}/config.json has no process")
        argv = process.get("args")
        env = process.get("env") or []
        cwd = process.get("cwd") or "/"
        if not isinstance(argv, list) or not argv or not isinstance(argv[0], str):
            raise UsageError(f"{self.path}/config.json: process.args must name a program")
        if not isinstance(env, list) or not isinstance(cwd, str):
            raise UsageError(f"{self.path}/config.json: malformed process.env or process.cwd")
        return find_entrypoint(self.rootfs, argv[0], [str(entry) for entry in env], cwd)


def _runtime(
    bundle: Bundle, given: str | None, default: RuntimeIdentity | None = None
) -> RuntimeIdentity:
    from inclavare.enclave.config import resolve_enclave
    from inclavare.tee.sim.measurement import RuntimeIdentity

    if given:
        return RuntimeIdentity.parse(given)
    # Signing may happen away from the host that runs the enclave: no device check here.
    resolution = resolve_enclave(bundle.config, path_exists=lambda _: True)
    if resolution.enclave is not None:
        return RuntimeIdentity.for_runtime_path(resolution.enclave.runtime_path)
    if default is not None:
        return default
    raise UsageError(
        f"{bundle.path}/config.json sets no enclave type (ENCLAVE_TYPE or annotation "
        "enclave.type); give the runtime with --runtime"
    )


def _measure(bundle: Bundle, args: argparse.Namespace) -> Manifest:
    from inclavare.tee.sim.files import measure

    runtime = _runtime(bundle, args.runtime)
    return measure(bundle.rootfs, runtime, [bundle.entrypoint(), *args.trusted])


def _manifest_json(manifest: Manifest) -> dict[str, object]:
    return {
        "tee": "sim",
        "simulated": True,
        "mrenclave": manifest.mr_enclave.hex(),
        "runtime": {"name": manifest.runtime.name, "version": manifest.runtime.version},
        "files": [{"path": file.path, "sha256": file.sha256.hex()} for file in manifest.files],
    }


def _signature_json(signature: EnclaveSignature) -> dict[str, object]:
    sigstruct = signature.sigstruct
    document = _manifest_json(signature.manifest)
    document["mrenclave"] = sigstruct.enclave_hash.hex()
    document.update(
        {
            "mrsigner": sigstruct.mr_signer.hex(),
            "isv_prod_id": sigstruct.isv_prod_id,
            "isv_svn": sigstruct.isv_svn,
            "debug": sigstruct.debug,
            "date": f"{sigstruct.date:08x}",
        }
    )
    return document


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
