"""`rune-sign-server`: an HTTPS service that holds the enclave signing key.

The shim's carrier (signature_method = "server") sends it the bytes a SIGSTRUCT signs and
gets back the signature; the key never reaches the node.

    POST /api/v1/signature/pkcs1     {"material": BASE64}  ->  {"signature": BASE64, ...}
    GET  /api/v1/signature/public-key                      ->  {"public_key": PEM, ...}
    GET  /healthz                                          ->  {"status": "ok"}

`material` is the 256 bytes SIGSTRUCT signs (bytes 0..127 and 900..1027 of the SIGSTRUCT);
anything else (another size, headers that are not SGX's constants, reserved bytes that are
not zero) is refused with 400 and {"error": "..."}, so the key signs SIGSTRUCTs and nothing
else. The signature is RSASSA-PKCS1-v1_5 with SHA-256, big-endian, 384 bytes; the answer
also names the key (`modulus` in hex, `public_key` PEM, `mrsigner`).

TLS 1.2 or later; with a client CA the server requires a client certificate issued by it.
Requests are bounded (a 16 KiB body, a 10 second socket timeout per connection, TLS
handshake included, which runs in the connection's thread), and each one is logged as one
JSON line on standard error.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from inclavare.errors import InclavareError
from inclavare.tee.sim.sigstruct import (
    EXPONENT,
    HEADER1,
    HEADER2,
    Signer,
    check_public_key,
    key_signer,
    mr_signer_of,
)

MATERIAL_SIZE = 256
MAX_BODY = 16 * 1024
DRAIN_LIMIT = 64 * 1024
TIMEOUT = 10.0
SIGN_PATH = "/api/v1/signature/pkcs1"
PUBLIC_KEY_PATH = "/api/v1/signature/public-key"
HEALTH_PATH = "/healthz"
# (start, end) of the material that must be zero: SIGSTRUCT's reserved bytes 44..127, and
# 908..911, 912..927 (ISVFAMILYID), 992..1023 (reserved, ISVEXTPRODID) at offset 128 - 900
_ZERO = ((44, 128), (136, 156), (220, 252))


class SignServerError(InclavareError):
    """The sign server cannot start (its key or certificate)."""


def check_material(material: bytes) -> None:
    """Refuse what is not the signed part of a SIGSTRUCT (ValueError, one line)."""
    if len(material) != MATERIAL_SIZE:
        raise ValueError(
            f"material is {len(material)} bytes; the signed part of a SIGSTRUCT is {MATERIAL_SIZE}"
        )
    if material[0:16] != HEADER1 or material[24:40] != HEADER2:
        raise ValueError("material does not start with SIGSTRUCT's constant headers")
    if int.from_bytes(material[16:20], "little") != 0:
        raise ValueError("material's SIGSTRUCT vendor is not 0")
    for start, end in _ZERO:
        if any(material[start:end]):
            raise ValueError(f"material's reserved bytes {start}..{end - 1} are not zero")


class SigningKey:
    """The private key and what the answers say about it."""

    def __init__(self, key_pem: bytes) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from inclavare.tee.sim.errors import SignatureInvalid

        try:
            self.sign: Signer = key_signer(key_pem)
        except SignatureInvalid as error:
            raise SignServerError(str(error)) from None
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        numbers = key.public_key().public_numbers()
        check_public_key(numbers.n, numbers.e, "the signing key")
        self.modulus = numbers.n
        self.public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        self.mr_signer = mr_signer_of(self.modulus)

    def describe(self) -> dict[str, Any]:
        return {
            "public_key": self.public_pem,
            "modulus": f"{self.modulus:x}",
            "exponent": EXPONENT,
            "mrsigner": self.mr_signer.hex(),
        }


def server_context(certificate: str, tls_key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The server's TLS context: TLS 1.2+, client certificates required with a client CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, tls_key)
    except (OSError, ssl.SSLError) as error:
        raise SignServerError(
            f"TLS certificate {certificate} / key {tls_key}: {_reason(error)}"
        ) from None
    if client_ca:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as error:
            raise SignServerError(f"client CA {client_ca}: {_reason(error)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


class SignServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        key: SigningKey,
        context: ssl.SSLContext,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.key = key
        self.context = context
        self.log = log or _stderr
        self.signed = 0
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the handshake runs here, in the connection's thread, under the socket timeout:
        # a client that never finishes it holds only its own thread
        request.settimeout(TIMEOUT)
        started = time.monotonic()
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.write_log(
                {
                    "client": client_address[0],
                    "error": f"TLS handshake: {_reason(error)}",
                    "ms": round((time.monotonic() - started) * 1000, 2),
                }
            )
            return
        try:
            _Handler(connection, client_address, self)
        finally:
            try:
                connection.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        self.write_log({"client": client_address[0], "error": f"{type(error).__name__}: {error}"})

    def write_log(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}, sort_keys=True)
        self.log(line)


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Handler(BaseHTTPRequestHandler):
    server: SignServer
    protocol_version = "HTTP/1.1"
    server_version = "rune-sign-server"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.started = time.monotonic()

    def parse_request(self) -> bool:
        self._body_read = False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        # every answer is logged once, by _answer; http.server's own lines would repeat it
        pass

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._answer(200, {"status": "ok"})
        elif self.path == PUBLIC_KEY_PATH:
            self._answer(200, self.server.key.describe())
        elif self.path == SIGN_PATH:
            self._answer(405, {"error": f"{SIGN_PATH} takes POST"}, allow="POST")
        else:
            self._answer(404, {"error": f"no such resource {self.path[:200]}"})

    def do_POST(self) -> None:
        if self.path != SIGN_PATH:
            if self.path in (HEALTH_PATH, PUBLIC_KEY_PATH):
                self._answer(405, {"error": f"{self.path} takes GET"}, allow="GET")
            else:
                self._answer(404, {"error": f"no such resource {self.path[:200]}"})
            return
        body = self._body()
        if body is None:
            return
        try:
            material = _material(body)
            check_material(material)
        except ValueError as error:
            self._answer(400, {"error": str(error)})
            return
        signature, modulus = self.server.key.sign(material)
        self.server.signed += 1
        answer = self.server.key.describe()
        answer["signature"] = base64.b64encode(signature).decode()
        answer["algorithm"] = "RSASSA-PKCS1-v1_5-SHA256"
        assert modulus == self.server.key.modulus
        self._answer(200, answer)

    def do_PUT(self) -> None:
        self._answer(405, {"error": f"{self.command} is not served"}, allow="GET, POST")

    do_DELETE = do_PATCH = do_PUT

    def _discard_body(self) -> None:
        if self._body_read:
            return
        self._body_read = True
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= DRAIN_LIMIT:
            try:
                self.rfile.read(int(length))
            except OSError:
                pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self._answer(411, {"error": "a Content-Length is required (no chunked bodies)"})
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._answer(411, {"error": "a Content-Length is required"})
            return None
        length = int(length_text)
        if length > MAX_BODY:
            self._answer(413, {"error": f"the body is {length} bytes; at most {MAX_BODY}"})
            return None
        self._body_read = True
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        return body

    def _answer(self, status: int, document: dict[str, Any], allow: str = "") -> None:
        data = json.dumps(document).encode() + b"\n"
        if status >= 400:
            # the connection ends after an error; a body the client is still sending is
            # read first (up to a bound), or closing on it would reset the connection and
            # lose the answer
            self._discard_body()
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        record: dict[str, Any] = {
            "client": self.client_address[0],
            "method": self.command,
            "path": self.path[:200],
            "status": status,
            "ms": round((time.monotonic() - self.started) * 1000, 2),
        }
        peer = _peer_name(self.connection)
        if peer:
            record["client_certificate"] = peer
        if status >= 400:
            record["error"] = document.get("error", "")
        self.server.write_log(record)
        self.wfile.write(data)
        self.started = time.monotonic()


def _material(body: bytes) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("material"), str):
        raise ValueError('the body must be {"material": BASE64}')
    try:
        return base64.b64decode(document["material"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("material is not base64") from None


def _peer_name(connection: socket.socket) -> str:
    if not isinstance(connection, ssl.SSLSocket):
        return ""
    try:
        certificate = connection.getpeercert()
    except (ValueError, OSError):
        return ""
    subject: Any = (certificate or {}).get("subject", ())
    for entry in subject:
        for key, value in entry:
            if key == "commonName":
                return str(value)
    return ""


def serve(server: SignServer, stop: threading.Event | None = None) -> None:
    """Serve until `stop` is set (or forever)."""
    if stop is not None:
        event = stop

        def stopper() -> None:
            event.wait()
            server.shutdown()

        threading.Thread(target=stopper, name="stopper", daemon=True).start()
    server.serve_forever(poll_interval=0.2)
