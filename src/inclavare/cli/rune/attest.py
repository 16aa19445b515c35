"""rune attest: evidence of what runs in an enclave container.

    rune attest [--reportFile PATH] [--target-info FILE] [--nonce HEX] ID
    rune attest --isRA --quote-type ecdsa [--nonce HEX] --output FILE ID

Without --isRA: a local report (SGX's 432-byte sgx_report_t) of the container's enclave, made
by its enclave runtime for a target enclave (the quoting enclave unless --target-info gives
another 512-byte target info); --reportFile writes it to PATH inside the container's root
file system. With --isRA: that report is turned into an SGX ECDSA quote (version 3) whose
report data carries the nonce, written to --output; on the sim TEE `shelter verify --roots
<INCLAVARE_SIM_DIR>/root-ca.pem --allow-sim FILE` verifies it.
"""

from __future__ import annotations

from inclavare.cli.goflags import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context
    from inclavare.runtime.container import Container

USAGE = "[command options] <container-id>"
DESCRIPTION = """\
   Asks the enclave container's runtime for a local report of its enclave. With --isRA the
   report becomes a quote (remote attestation evidence) whose report data is --nonce.
   Evidence of the sim TEE says it is simulated: it proves nothing against the host's root."""
ARGUMENTS = (1, 1)
FLAGS = [
    Flag("isRA", bool, "remote attestation: write a quote instead of a local report"),
    Flag("quote-type", str, "the quote to make with --isRA: ecdsa", "ecdsa"),
    Flag("nonce", str, "hex, at most 64 bytes: the report data of the report or quote"),
    Flag("output", str, "with --isRA: the file to write the quote to"),
    Flag("reportFile", str, "write the local report to this path in the container's rootfs"),
    Flag("target-info", str, "a 512-byte SGX target info file (default: the quoting enclave)"),
]


def _nonce(text: str) -> bytes:
    from inclavare.errors import InclavareError

    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise InclavareError(f"--nonce {text!r}: not hexadecimal") from None
    if len(nonce) > 64:
        raise InclavareError(f"--nonce is {len(nonce)} bytes; at most 64 fit in report data")
    return nonce


def _write_in_rootfs(container: Container, path: str, data: bytes) -> str:
    """Write `data` at `path` as the container sees it (links stay inside its rootfs)."""
    from inclavare.errors import InclavareError
    from inclavare.tee.sim.files import resolve_in_root

    rootfs = container.record.get("rootfs", "")
    target = resolve_in_root(rootfs, path if path.startswith("/") else "/" + path)
    try:
        target.write_bytes(data)
    except OSError as error:
        raise InclavareError(
            f"write the report to {path} in the container: {error.strerror}"
        ) from None
    return str(target)


def run(context: Context, options: Options, args: list[str]) -> int:
    import json
    import sys

    from inclavare.errors import InclavareError
    from inclavare.runtime.container import CREATED, PAUSED, RUNNING, Container
    from inclavare.runtime.enclave import SIM_DISCLAIMER, local_report

    container = Container.load(context.root, args[0])
    enclave = container.record.get("enclave")
    if not enclave:
        raise InclavareError(f"container {container.id} is not an enclave container")
    status = container.status()
    if status not in (CREATED, RUNNING, PAUSED):
        raise InclavareError(f"cannot attest a {status} container {container.id}")
    nonce = _nonce(options.nonce)
    simulated = bool(enclave.get("simulated"))
    if options.isRA:
        if options.quote_type != "ecdsa":
            raise InclavareError(
                f"--quote-type {options.quote_type!r}: rune makes ecdsa quotes only"
            )
        if not options.output:
            raise InclavareError("--isRA needs --output FILE for the quote")
        if options.target_info:
            raise InclavareError("--target-info is for local reports: a quote targets the QE")
    if not simulated:
        raise InclavareError(
            "attestation of intelSgx enclaves needs the SGX quoting service, which rune does "
            "not drive yet"
        )
    from inclavare.tee.sim.sgx import Report
    from inclavare.tee.sim.store import load_platform

    platform = load_platform()
    if options.target_info:
        try:
            with open(options.target_info, "rb") as stream:
                target_info = stream.read()
        except OSError as error:
            raise InclavareError(f"read {options.target_info}: {error.strerror}") from None
    else:
        target_info = platform.quoting_enclave_target_info
    report = local_report(container, target_info, nonce)
    parsed = Report.parse(report)
    body = parsed.body
    summary = {
        "tee": "sim",
        "simulated": True,
        "note": SIM_DISCLAIMER,
        "mrenclave": body.mr_enclave.hex(),
        "mrsigner": body.mr_signer.hex(),
        "isvprodid": body.isv_prod_id,
        "isvsvn": body.isv_svn,
        "debug": parsed.identity.debug,
        "report_data": body.report_data.hex(),
    }
    if options.isRA:
        quote = platform.quote_report(report)
        try:
            with open(options.output, "wb") as stream:
                stream.write(quote)
        except OSError as error:
            raise InclavareError(f"write {options.output}: {error.strerror}") from None
        summary.update(evidence="sgx-ecdsa-quote-v3", output=options.output, size=len(quote))
    else:
        summary.update(evidence="sgx-local-report", size=len(report))
        if options.reportFile:
            summary["report_file"] = _write_in_rootfs(container, options.reportFile, report)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0
