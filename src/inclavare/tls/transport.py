"""TLS connections as the two drivers (blocking sockets, asyncio) see them.

A `TlsConnection` is bound either to a socket (the blocking driver: OpenSSL reads and writes
the file descriptor itself, which keeps bulk transfers as fast as plain TLS) or to memory
buffers (the asyncio driver feeds it bytes and sends what it produces). Its operations raise
`WantRead`/`WantWrite` when they need I/O first, `TlsFailure` with OpenSSL's reasons when the
TLS protocol fails (including an alert from the peer), and `TransportClosed` at the end of the
stream.

The OpenSSL implementation (pyOpenSSL): TLS 1.3 only; no session tickets and no session cache,
so every connection is a full handshake in which the certificate, and so the evidence, is
presented; peer certificates are handed to the verification callback of the Enclave-TLS
instance, which decides (OpenSSL's own chain building is not used: RA-TLS certificates are
self-signed). The null implementation passes bytes through unencrypted (upstream's nulltls).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

# The exporter label of the value that session-bound evidence carries as its nonce.
EXPORTER_LABEL = b"EXPORTER-inclavare-enclave-tls-session-evidence"
BINDER_SIZE = 32
# The ALPN protocol id both sides offer when they exchange session-bound evidence.
ALPN_SESSION_EVIDENCE = b"inclavare-etls-session-evidence/1"


class WantRead(Exception):
    """The operation needs bytes from the peer first."""


class WantWrite(Exception):
    """The operation needs the socket to accept bytes first."""


class TransportClosed(Exception):
    """The peer ended the stream (close_notify, or the transport closed)."""

    def __init__(self, clean: bool) -> None:
        super().__init__("closed cleanly" if clean else "closed without close_notify")
        self.clean = clean


class TlsFailure(Exception):
    """OpenSSL failed the connection; `reasons` are its error strings, innermost last."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons) or "TLS failure")
        self.reasons = reasons

    @property
    def alert_from_peer(self) -> str | None:
        """The description of the alert the peer sent, if that is what failed."""
        for reason in self.reasons:
            for prefix in ("sslv3 alert ", "tlsv1 alert ", "tlsv13 alert ", "ssl/tls alert "):
                if reason.startswith(prefix):
                    return reason[len(prefix) :]
        return None


# Called with the connection's app data, the DER of the peer's leaf certificate and the DER of
# the other certificates it sent; returns whether to accept.
VerifyCallback = Callable[[Any, bytes, tuple[bytes, ...]], bool]


@dataclass(frozen=True)
class TlsSettings:
    server: bool
    certificate: bytes | None  # DER of this side's certificate
    private_key: CertificateIssuerPrivateKeyTypes | None
    request_peer_certificate: bool
    verify: VerifyCallback | None
    session_evidence: bool  # offer or select ALPN_SESSION_EVIDENCE


class TlsConnection:
    """One connection; see the module documentation for its exceptions."""

    app_data: Any = None

    def do_handshake(self) -> None:
        raise NotImplementedError

    def recv(self, size: int) -> bytes:
        raise NotImplementedError

    def recv_into(self, buffer: bytearray | memoryview) -> int:
        data = self.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def send(self, data: bytes | memoryview) -> int:
        raise NotImplementedError

    def sendall_blocking(self, data: bytes | memoryview) -> None:
        """Send everything over a blocking socket."""
        view = memoryview(data)
        while view:
            view = view[self.send(view) :]

    def pending(self) -> int:
        return 0

    def feed(self, data: bytes) -> None:
        """Memory mode: bytes received from the peer."""
        raise NotImplementedError

    def outgoing(self) -> bytes:
        """Memory mode: bytes to send to the peer (empty when there are none)."""
        raise NotImplementedError

    def binder(self) -> bytes | None:
        """The session's exporter value for session-bound evidence (None without TLS)."""
        return None

    def selected_alpn(self) -> bytes | None:
        return None

    def early_binder(self) -> bytes | None:
        """Server side, during the handshake: the exporter value once the server's flight
        (up to its Finished) is out, when the implementation can tell; else None. The value
        is the one the finished session will have: TLS 1.3 derives the exporter secret from
        the transcript up to the server's Finished."""
        return None

    def peer_chain(self) -> tuple[bytes, ...]:
        return ()

    def close_notify(self) -> None:
        """Queue (memory mode) or send (socket mode) close_notify, if the session allows."""

    def describe(self) -> str:
        return "no TLS"


class TlsContext:
    def connection(self, sock: socket.socket | None) -> TlsConnection:
        raise NotImplementedError


# --- OpenSSL ---------------------------------------------------------------------------


class OpenSslContext(TlsContext):
    def __init__(self, settings: TlsSettings) -> None:
        from OpenSSL import SSL

        self.settings = settings
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.set_max_proto_version(SSL.TLS1_3_VERSION)
        context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        if settings.certificate is not None and settings.private_key is not None:
            from cryptography import x509

            context.use_certificate(x509.load_der_x509_certificate(settings.certificate))
            context.use_privatekey(settings.private_key)  # type: ignore[arg-type]
            context.check_privatekey()
        if settings.request_peer_certificate:
            mode = SSL.VERIFY_PEER
            if settings.server:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(mode, self._verify)
        else:
            context.set_verify(SSL.VERIFY_NONE)
        if settings.session_evidence and settings.server:
            context.set_alpn_select_callback(_select_session_evidence)  # type: ignore[arg-type]
        elif settings.session_evidence:
            context.set_alpn_protos([ALPN_SESSION_EVIDENCE])
        self._context = context

    def _verify(self, connection: Any, x509: Any, error: int, depth: int, ok: int) -> bool:
        # Never raises: pyOpenSSL keeps a callback's exception on the context and would raise
        # it on whichever connection fails next.
        if depth > 0:
            return True  # issuers the peer sent are judged with the leaf, below
        try:
            from OpenSSL import crypto

            verify = self.settings.verify
            if verify is None:
                return True
            check = connection.get_app_data()
            # OpenSSL may call back more than once for the leaf; the first answer stands.
            # (Its alert for a refused self-signed certificate is unknown_ca: pyOpenSSL offers
            # no way to choose another.)
            if getattr(check, "checked", False):
                return getattr(check, "reason", None) is None
            leaf = crypto.dump_certificate(crypto.FILETYPE_ASN1, x509)
            sent = connection.get_peer_cert_chain() or []
            chain = tuple(
                encoded
                for encoded in (
                    crypto.dump_certificate(crypto.FILETYPE_ASN1, item) for item in sent
                )
                if encoded != leaf
            )
            return verify(check, leaf, chain)
        except Exception:
            return False

    def connection(self, sock: socket.socket | None) -> TlsConnection:
        return OpenSslConnection(self._context, sock, self.settings.server)


def _select_session_evidence(connection: Any, offered: list[bytes]) -> bytes | object:
    from OpenSSL import SSL

    return (
        ALPN_SESSION_EVIDENCE if ALPN_SESSION_EVIDENCE in offered else SSL.NO_OVERLAPPING_PROTOCOLS
    )


class OpenSslConnection(TlsConnection):
    def __init__(self, context: Any, sock: socket.socket | None, server: bool) -> None:
        from OpenSSL import SSL

        self._ssl = SSL
        self._connection = SSL.Connection(context, sock)
        if server:
            self._connection.set_accept_state()
        else:
            self._connection.set_connect_state()

    @property
    def app_data(self) -> Any:
        return self._connection.get_app_data()

    @app_data.setter
    def app_data(self, value: Any) -> None:
        self._connection.set_app_data(value)

    def _translate(self, error: Exception) -> Exception:
        SSL = self._ssl
        if isinstance(error, SSL.WantReadError):
            return WantRead()
        if isinstance(error, SSL.WantWriteError):
            return WantWrite()
        if isinstance(error, SSL.ZeroReturnError):
            return TransportClosed(clean=True)
        if isinstance(error, SSL.SysCallError):
            if error.args and error.args[0] in (-1, 0):
                return TransportClosed(clean=False)
            return OSError(*error.args)
        return TlsFailure(_reasons(error))

    def do_handshake(self) -> None:
        try:
            self._connection.do_handshake()
        except self._ssl.Error as error:
            raise self._translate(error) from None

    def recv(self, size: int) -> bytes:
        try:
            return self._connection.recv(size)
        except self._ssl.Error as error:
            raise self._translate(error) from None

    def recv_into(self, buffer: bytearray | memoryview) -> int:
        try:
            return self._connection.recv_into(buffer)
        except self._ssl.Error as error:
            raise self._translate(error) from None

    def send(self, data: bytes | memoryview) -> int:
        try:
            return self._connection.send(data)
        except self._ssl.Error as error:
            raise self._translate(error) from None

    def sendall_blocking(self, data: bytes | memoryview) -> None:
        try:
            self._connection.sendall(data)
        except self._ssl.Error as error:
            raise self._translate(error) from None

    def pending(self) -> int:
        return self._connection.pending()

    def feed(self, data: bytes) -> None:
        self._connection.bio_write(data)

    def outgoing(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self._connection.bio_read(65536))
            except self._ssl.WantReadError:
                break
        return b"".join(chunks)

    def binder(self) -> bytes:
        return self._connection.export_keying_material(EXPORTER_LABEL, BINDER_SIZE, b"")

    def selected_alpn(self) -> bytes | None:
        return self._connection.get_alpn_proto_negotiated() or None

    def early_binder(self) -> bytes | None:
        # OpenSSL's state after a TLS 1.3 server has written its Finished and waits for the
        # client's second flight.
        if self._connection.get_state_string() != b"TLSv1.3 early data":
            return None
        try:
            return self.binder()
        except self._ssl.Error:
            return None

    def peer_chain(self) -> tuple[bytes, ...]:
        from OpenSSL import crypto

        chain = self._connection.get_peer_cert_chain() or []
        return tuple(crypto.dump_certificate(crypto.FILETYPE_ASN1, item) for item in chain)

    def close_notify(self) -> None:
        try:
            self._connection.shutdown()
        except self._ssl.Error:
            pass

    def describe(self) -> str:
        return (
            f"{self._connection.get_protocol_version_name()} {self._connection.get_cipher_name()}"
        )


def _reasons(error: Exception) -> list[str]:
    reasons = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and item:
            reasons.append(str(item[-1]))
    return reasons or [str(error) or type(error).__name__]


# --- no TLS ----------------------------------------------------------------------------


class NullContext(TlsContext):
    def connection(self, sock: socket.socket | None) -> TlsConnection:
        return NullConnection(sock)


class NullConnection(TlsConnection):
    """Bytes in the clear, for debugging (upstream's nulltls)."""

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self._incoming = bytearray()
        self._outgoing = bytearray()
        self._eof = False

    def do_handshake(self) -> None:
        return None

    def recv(self, size: int) -> bytes:
        if self._sock is not None:
            try:
                data = self._sock.recv(size)
            except BlockingIOError:
                raise WantRead() from None
            if not data:
                raise TransportClosed(clean=True)
            return data
        if self._incoming:
            data = bytes(self._incoming[:size])
            del self._incoming[:size]
            return data
        if self._eof:
            raise TransportClosed(clean=True)
        raise WantRead()

    def send(self, data: bytes | memoryview) -> int:
        if self._sock is not None:
            try:
                return self._sock.send(data)
            except BlockingIOError:
                raise WantWrite() from None
        self._outgoing += data
        return len(data)

    def pending(self) -> int:
        return len(self._incoming)

    def feed(self, data: bytes) -> None:
        if not data:
            self._eof = True
        self._incoming += data

    def outgoing(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data
