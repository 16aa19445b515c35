"""The attestation channel of a sim enclave process: how a program asks for its own quote.

On SGX hardware a program inside an enclave gets a quote by making a report (EREPORT, with
report data of its choice) for the quoting enclave and handing it to the quoting service;
Gramine exposes this as `/dev/attestation` (write `user_report_data`, read `quote`). On the
simulated TEE the enclave's "hardware" is its runtime, which holds the launched enclave's
identity: each process a built-in runtime starts inherits one end of a SOCK_SEQPACKET
socket pair, whose number is in the environment variable INCLAVARE_ATTESTATION_FD. The
runtime answers on the other end, so a process can only ever obtain quotes of the enclave
it belongs to, with report data of its choice.

One request, one reply, each a single packet:

    request   b"QUOT" + report data (exactly 64 bytes)
    reply     b"QUOT" + an SGX ECDSA quote (version 3) whose REPORTDATA is that data
    reply     b"ERR " + a one-line reason, UTF-8

This module is the format (pure functions) and the few lines of client I/O.
"""

from __future__ import annotations

import os
import socket
import threading

from inclavare.tee.sim.errors import SimError

ENVIRONMENT_VARIABLE = "INCLAVARE_ATTESTATION_FD"
QUOTE = b"QUOT"
ERROR = b"ERR "
REPORT_DATA_SIZE = 64
MAX_PACKET = 64 * 1024
# One request in flight per process: a reply carries no request id.
_in_flight = threading.Lock()


class ChannelError(SimError):
    """The attestation channel is absent, broken, or refused the request."""


def encode_request(report_data: bytes) -> bytes:
    if len(report_data) != REPORT_DATA_SIZE:
        raise ChannelError(f"report data must be {REPORT_DATA_SIZE} bytes, not {len(report_data)}")
    return QUOTE + report_data


def parse_request(packet: bytes) -> bytes:
    """The report data a request asks for; ChannelError for anything else."""
    if packet[:4] != QUOTE or len(packet) != 4 + REPORT_DATA_SIZE:
        raise ChannelError(
            f"malformed attestation request ({len(packet)} bytes; expected QUOT and "
            f"{REPORT_DATA_SIZE} bytes of report data)"
        )
    return packet[4:]


def encode_quote(quote: bytes) -> bytes:
    return QUOTE + quote


def encode_error(reason: str) -> bytes:
    return ERROR + " ".join(reason.split()).encode()[: MAX_PACKET - 4]


def parse_reply(packet: bytes) -> bytes:
    """The quote in a reply; ChannelError with the runtime's reason for a refusal."""
    if packet[:4] == QUOTE and len(packet) > 4:
        return packet[4:]
    if packet[:4] == ERROR:
        raise ChannelError(f"the enclave runtime refused: {packet[4:].decode(errors='replace')}")
    raise ChannelError(f"malformed attestation reply ({len(packet)} bytes)")


def channel_fd(environ: dict[str, str] | None = None) -> int | None:
    """The channel's descriptor from the environment, or None outside a sim enclave."""
    value = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
    if not value:
        return None
    if not value.isdigit():
        raise ChannelError(f"{ENVIRONMENT_VARIABLE}={value!r} is not a descriptor number")
    return int(value)


def request_quote(fd: int, report_data: bytes, timeout: float = 10.0) -> bytes:
    """Ask the runtime on channel `fd` for a quote with `report_data` as REPORTDATA."""
    request = encode_request(report_data)
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as error:
        raise ChannelError(
            f"the attestation channel (descriptor {fd}) is not usable: {error.strerror}"
        ) from None
    with _in_flight, sock:
        if sock.type != socket.SOCK_SEQPACKET:
            raise ChannelError(f"descriptor {fd} is not an attestation channel")
        sock.settimeout(timeout)
        try:
            sock.send(request)
            reply = sock.recv(MAX_PACKET)
        except OSError as error:
            raise ChannelError(
                f"the attestation channel failed: {error.strerror or 'timed out'}"
            ) from None
    if not reply:
        raise ChannelError("the enclave runtime closed the attestation channel")
    return parse_reply(reply)
