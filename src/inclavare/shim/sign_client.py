"""The shim's side of `rune-sign-server`: a `Signer` that asks the server.

The server is trusted only once its certificate is verified: against the configured CA
(with the host name or IP address of the configured address), or by the SHA-256 of its
certificate's public key (SubjectPublicKeyInfo, DER) when a key is pinned. Every failure
(server down, wrong certificate, timeout, an answer that is not a signature) is a
`SigningServerError` with one line naming the server and the problem. The answer is
checked again by `sign_enclave_with` (the signature must verify with the key it names)
and, when accepted signers are configured, its key's MRSIGNER must be one of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import ssl
from typing import Any

from inclavare.errors import InclavareError
from inclavare.shim.config import SignatureServer
from inclavare.shim.sign_server import PUBLIC_KEY_PATH, SIGN_PATH
from inclavare.tee.sim.sigstruct import Signer, mr_signer_of

MAX_ANSWER = 64 * 1024


class SigningServerError(InclavareError):
    """The signing server cannot be reached, is not trusted, or answered nonsense."""


def client_context(server: SignatureServer) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    where = f"signing server {server.address}"
    if server.ca is not None:
        try:
            context.load_verify_locations(server.ca)
        except (OSError, ssl.SSLError) as error:
            raise SigningServerError(f"{where}: CA {server.ca}: {_reason(error)}") from None
    else:
        # the pinned key is the trust: checked on the connected socket before any request
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if server.client_certificate and server.client_key:
        try:
            context.load_cert_chain(server.client_certificate, server.client_key)
        except (OSError, ssl.SSLError) as error:
            raise SigningServerError(
                f"{where}: client certificate {server.client_certificate}: {_reason(error)}"
            ) from None
    return context


def spki_sha256(certificate_der: bytes) -> bytes:
    """SHA-256 of a certificate's SubjectPublicKeyInfo (what a pinned key names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public = x509.load_der_x509_certificate(certificate_der).public_key()
    return hashlib.sha256(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()


def request(
    server: SignatureServer, method: str, path: str, document: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One call to the server; its JSON answer (status 200) or a SigningServerError."""
    where = f"signing server {server.address}"
    context = client_context(server)
    connection = http.client.HTTPSConnection(
        server.host, server.port, timeout=server.timeout, context=context
    )
    try:
        try:
            connection.connect()
        except ssl.SSLCertVerificationError as error:
            raise SigningServerError(
                f"{where}: its certificate is not trusted: {error.verify_message}"
            ) from None
        if server.pinned_key_sha256 is not None:
            assert isinstance(connection.sock, ssl.SSLSocket)
            presented = spki_sha256(connection.sock.getpeercert(binary_form=True) or b"")
            if presented != server.pinned_key_sha256:
                raise SigningServerError(
                    f"{where}: its certificate's key (sha256 {presented.hex()}) is not the "
                    f"pinned one ({server.pinned_key_sha256.hex()})"
                )
        body = json.dumps(document).encode() if document is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(MAX_ANSWER + 1)
    except SigningServerError:
        raise
    except TimeoutError:
        raise SigningServerError(f"{where}: no answer within {server.timeout:g}s") from None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
        raise SigningServerError(f"{where}: {_tls_failure(error, server)}") from None
    except (OSError, http.client.HTTPException) as error:
        raise SigningServerError(f"{where}: {_reason(error)}") from None
    finally:
        connection.close()
    if len(data) > MAX_ANSWER:
        raise SigningServerError(f"{where}: the answer is larger than {MAX_ANSWER} bytes")
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if response.status != 200:
        problem = answer.get("error") if isinstance(answer, dict) else None
        raise SigningServerError(
            f"{where}: answered {response.status} {response.reason}"
            + (f": {str(problem)[:200]}" if problem else "")
        )
    if not isinstance(answer, dict):
        raise SigningServerError(f"{where}: the answer is not a JSON object")
    return answer


def server_signer(server: SignatureServer, accepted: tuple[bytes, ...] = ()) -> Signer:
    """A signer whose key is the server's."""
    where = f"signing server {server.address}"

    def sign(material: bytes) -> tuple[bytes, int]:
        answer = request(
            server, "POST", SIGN_PATH, {"material": base64.b64encode(material).decode()}
        )
        try:
            signature = base64.b64decode(str(answer["signature"]), validate=True)
            modulus = int(str(answer["modulus"]), 16)
        except (KeyError, ValueError, binascii.Error):
            raise SigningServerError(
                f"{where}: the answer lacks a base64 signature and a hex modulus"
            ) from None
        if accepted and mr_signer_of(modulus) not in accepted:
            raise SigningServerError(
                f"{where}: signs with MRSIGNER {mr_signer_of(modulus).hex()}, which is not "
                "one of enclave_runtime.accepted_signers"
            )
        return signature, modulus

    return sign


def _tls_failure(error: BaseException, server: SignatureServer) -> str:
    """What a TLS failure after the handshake started means. With TLS 1.3 a server that
    refuses the client's certificate says so after the client's side of the handshake is
    done: the client reads either the alert or, if the server closed first, an EOF."""
    reason = _reason(error)
    presented = server.client_certificate is not None
    if "CERTIFICATE_REQUIRED" in reason:
        return "the server requires a client certificate" + (
            " and refused this one" if presented else " (none is configured)"
        )
    if isinstance(error, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
        return "the server closed the connection during TLS (" + (
            "it refused the client certificate?)"
            if presented
            else "it requires a client certificate? none is configured)"
        )
    return f"TLS: {reason}"


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


__all__ = ["PUBLIC_KEY_PATH", "SigningServerError", "request", "server_signer", "spki_sha256"]
