"""rune-sign-server for real, over TLS on the loopback, and the shim's signer talking to it:
a trusted CA, a wrong one, a pinned key, client certificates, a server that is down or
silent or answers nonsense, and malformed requests."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import InclavareError
from inclavare.shim.config import SignatureServer
from inclavare.shim.sign_client import SigningServerError, request, server_signer
from inclavare.shim.sign_server import SigningKey, SignServer, serve, server_context
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity
from inclavare.tee.sim.sigstruct import EnclaveSignature, mr_signer_of, sign_enclave_with
from tests.integration.conftest import rune_path
from tests.signing_pki import Pki, make_pki

MANIFEST = Manifest.of(RuntimeIdentity.for_runtime_path("builtin:native"), [])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Running:
    def __init__(self, server: SignServer, log: list[str]) -> None:
        self.server = server
        self.log = log
        self.address = f"https://127.0.0.1:{server.port}"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log]

    def last(self) -> dict[str, Any]:
        # a failed handshake is logged after the client saw it fail: wait a little
        deadline = time.monotonic() + 5
        while not self.log and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records()[-1]


def run_server(pki: Pki, client_ca: Path | None = None) -> Iterator[Running]:
    log: list[str] = []
    key = SigningKey(pki.signing_key.read_bytes())
    context = server_context(
        str(pki.server_certificate), str(pki.server_key), str(client_ca) if client_ca else None
    )
    server = SignServer(("127.0.0.1", 0), key, context, log.append)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(server, stop))
    thread.start()
    try:
        yield Running(server, log)
    finally:
        stop.set()
        thread.join()
        server.server_close()


@pytest.fixture
def running(pki: Pki) -> Iterator[Running]:
    yield from run_server(pki)


@pytest.fixture
def mutual(pki: Pki) -> Iterator[Running]:
    yield from run_server(pki, pki.client_ca)


def sign(server: SignatureServer, accepted: tuple[bytes, ...] = ()) -> EnclaveSignature:
    return sign_enclave_with(server_signer(server, accepted), MANIFEST)


def key_mr_signer(pki: Pki) -> bytes:
    return SigningKey(pki.signing_key.read_bytes()).mr_signer


def test_a_signature_from_the_server_verified_by_its_ca(pki: Pki, running: Running) -> None:
    server = SignatureServer(running.address, "127.0.0.1", running.server.port, str(pki.ca))
    signature = sign(server)
    signature.verify()
    assert signature.sigstruct.mr_signer == key_mr_signer(pki)
    record = running.last()
    assert (record["method"], record["path"], record["status"]) == (
        "POST",
        "/api/v1/signature/pkcs1",
        200,
    )
    # the host name is checked too: "localhost" is in the certificate, 127.0.0.2 is not
    sign(SignatureServer("https://localhost", "localhost", running.server.port, str(pki.ca)))


def test_a_server_whose_certificate_another_ca_issued_is_refused(
    pki: Pki, running: Running
) -> None:
    server = SignatureServer(running.address, "127.0.0.1", running.server.port, str(pki.other_ca))
    with pytest.raises(SigningServerError) as caught:
        sign(server)
    assert str(caught.value) == (
        f"signing server {running.address}: its certificate is not trusted: "
        "unable to get local issuer certificate"
    )
    assert "TLS handshake" in running.last()["error"]


def test_a_pinned_key(pki: Pki, running: Running) -> None:
    pinned = bytes.fromhex(pki.server_spki_sha256)
    server = SignatureServer(
        running.address, "127.0.0.1", running.server.port, pinned_key_sha256=pinned
    )
    sign(server).verify()
    wrong = SignatureServer(
        running.address, "127.0.0.1", running.server.port, pinned_key_sha256=bytes(32)
    )
    with pytest.raises(SigningServerError, match="is not the pinned one"):
        sign(wrong)
    assert running.server.signed == 1


def test_client_certificates_when_the_server_requires_them(pki: Pki, mutual: Running) -> None:
    port = mutual.server.port
    anonymous = SignatureServer(mutual.address, "127.0.0.1", port, str(pki.ca))
    with pytest.raises(SigningServerError) as caught:
        sign(anonymous)
    assert str(caught.value).startswith(f"signing server {mutual.address}: ")
    # the alert, or the connection closed before the client read it
    assert str(caught.value).endswith(
        (
            "the server requires a client certificate (none is configured)",
            "the server closed the connection during TLS (it requires a client certificate? "
            "none is configured)",
        )
    ), str(caught.value)
    node = SignatureServer(
        mutual.address,
        "127.0.0.1",
        port,
        str(pki.ca),
        client_certificate=str(pki.client_certificate),
        client_key=str(pki.client_key),
    )
    sign(node).verify()
    assert mutual.last()
    assert any(
        record.get("client_certificate") == "node-1" and record["status"] == 200
        for record in mutual.records()
    )
    # a certificate the server's client CA did not issue is no better than none
    impostor = SignatureServer(
        mutual.address,
        "127.0.0.1",
        port,
        str(pki.ca),
        client_certificate=str(pki.server_certificate),
        client_key=str(pki.server_key),
    )
    with pytest.raises(SigningServerError):
        sign(impostor)
    assert mutual.server.signed == 1


def test_a_server_that_is_down(pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = SignatureServer(f"https://127.0.0.1:{port}", "127.0.0.1", port, str(pki.ca))
    with pytest.raises(SigningServerError) as caught:
        sign(server)
    assert str(caught.value) == f"signing server https://127.0.0.1:{port}: Connection refused"


def test_a_server_that_never_answers(pki: Pki) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        server = SignatureServer(
            f"https://127.0.0.1:{port}", "127.0.0.1", port, str(pki.ca), timeout=0.3
        )
        with pytest.raises(SigningServerError, match=r"no answer within 0\.3s$"):
            sign(server)


def test_a_signer_the_node_does_not_accept(pki: Pki, running: Running) -> None:
    server = SignatureServer(running.address, "127.0.0.1", running.server.port, str(pki.ca))
    with pytest.raises(SigningServerError, match=r"not one of enclave_runtime\.accepted_signers"):
        sign(server, accepted=(bytes(32),))
    sign(server, accepted=(key_mr_signer(pki),))


class _Nonsense(BaseHTTPRequestHandler):
    answer: bytes = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"not json", "the answer is not a JSON object"),
        (b"{}", "the answer lacks a base64 signature and a hex modulus"),
        (
            json.dumps({"signature": "AAAA", "modulus": "ff"}).encode(),
            "the signer's key is RSA-8 with exponent 3",
        ),
        (
            json.dumps(
                {"signature": base64.b64encode(bytes(384)).decode(), "modulus": "c" * 768}
            ).encode(),
            "the signer's signature does not verify",
        ),
    ],
)
def test_an_answer_that_is_not_a_signature_is_refused(
    pki: Pki, answer: bytes, message: str
) -> None:
    handler = type("Handler", (_Nonsense,), {"answer": answer})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    context = server_context(str(pki.server_certificate), str(pki.server_key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        port = httpd.server_address[1]
        server = SignatureServer(f"https://127.0.0.1:{port}", "127.0.0.1", port, str(pki.ca))
        with pytest.raises(InclavareError, match=message):
            sign(server)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def raw(
    running: Running, pki: Pki, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(pki.ca))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", running.server.port, context=context, timeout=5
    )
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def material(**changes: bytes) -> bytes:
    from inclavare.tee.sim.sigstruct import HEADER1, HEADER2

    data = bytearray(256)
    data[0:16] = HEADER1
    data[24:40] = HEADER2
    for offset, value in changes.items():
        start = int(offset.lstrip("_"))
        data[start : start + len(value)] = value
    return bytes(data)


def post(material_bytes: bytes) -> bytes:
    return json.dumps({"material": base64.b64encode(material_bytes).decode()}).encode()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/api/v1/signature/pkcs1", post(bytes(255)), 400, "material is 255 bytes"),
        ("POST", "/api/v1/signature/pkcs1", post(bytes(256)), 400, "constant headers"),
        ("POST", "/api/v1/signature/pkcs1", post(material(_16=b"\x86\x80")), 400, "vendor"),
        ("POST", "/api/v1/signature/pkcs1", post(material(_100=b"\x01")), 400, "reserved bytes"),
        ("POST", "/api/v1/signature/pkcs1", post(material(_230=b"\x01")), 400, "reserved bytes"),
        ("POST", "/api/v1/signature/pkcs1", b"{", 400, "the body is not JSON"),
        ("POST", "/api/v1/signature/pkcs1", b"[]", 400, 'must be {"material": BASE64}'),
        ("POST", "/api/v1/signature/pkcs1", b'{"material": "!!"}', 400, "not base64"),
        ("POST", "/api/v1/signature/pkcs1", b"x" * 20000, 413, "at most 16384"),
        ("GET", "/api/v1/signature/pkcs1", None, 405, "takes POST"),
        ("POST", "/healthz", b"{}", 405, "takes GET"),
        ("GET", "/api/v1/../../etc/passwd", None, 404, "no such resource"),
        ("DELETE", "/healthz", None, 405, "is not served"),
    ],
)
def test_malformed_requests_get_a_json_error(
    pki: Pki,
    running: Running,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    error: str,
) -> None:
    answer = raw(running, pki, method, path, body, {"Content-Type": "application/json"})
    assert answer[0] == status
    assert error in answer[1]["error"]
    assert running.last()["status"] == status
    assert running.server.signed == 0


def test_a_body_without_a_length_is_refused(pki: Pki, running: Running) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    plain = socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
    with context.wrap_socket(plain, server_hostname="127.0.0.1") as connection:
        connection.sendall(
            b"POST /api/v1/signature/pkcs1 HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert b"Content-Length is required" in answer


def test_the_public_key_and_health(pki: Pki, running: Running) -> None:
    server = SignatureServer(running.address, "127.0.0.1", running.server.port, str(pki.ca))
    key = request(server, "GET", "/api/v1/signature/public-key")
    assert mr_signer_of(int(key["modulus"], 16)).hex() == key["mrsigner"]
    assert key["mrsigner"] == key_mr_signer(pki).hex() and key["exponent"] == 3
    assert key["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert request(server, "GET", "/healthz") == {"status": "ok"}


def test_the_program_stops_on_sigterm_and_refuses_bad_input(pki: Pki, tmp_path: Path) -> None:
    program = Path(rune_path()).parent / "rune-sign-server"
    if not program.exists():
        pytest.skip(f"rune-sign-server is not installed beside {rune_path()}")
    files = [
        "--key", str(pki.signing_key), "--cert", str(pki.server_certificate),
        "--tls-key", str(pki.server_key),
    ]  # fmt: skip
    process = subprocess.Popen(
        [str(program), "--listen", "127.0.0.1:0", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on https://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        server = SignatureServer(f"https://127.0.0.1:{port}", "127.0.0.1", port, str(pki.ca))
        sign(server).verify()
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    records = [json.loads(line) for line in errors.splitlines()]
    assert [record.get("event") for record in records] == ["started", None, "stopped"]
    assert records[1]["status"] == 200 and records[2]["signed"] == 1

    # a TLS key for the enclave key: not RSA-3072/e=3
    for arguments, message in (
        (["--listen", "nowhere", *files], "--listen 'nowhere': expected HOST:PORT"),
        (
            ["--listen", "127.0.0.1:0", *files[:1], str(pki.server_key), *files[2:]],
            "the signing key is not an RSA key",
        ),
        (
            ["--listen", "127.0.0.1:0", *files[:1], str(tmp_path / "no.pem"), *files[2:]],
            f"{tmp_path}/no.pem: No such file or directory",
        ),
        (
            ["--listen", "127.0.0.1:0", *files, "--client-ca", str(pki.signing_key)],
            f"client CA {pki.signing_key}: ",
        ),
    ):
        result = subprocess.run(
            [str(program), *arguments], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
