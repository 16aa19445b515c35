"""Certificates for the signing server's tests: a CA, a server certificate for the loopback
address, a client certificate, and an enclave signing key, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    server_certificate: Path
    server_key: Path
    client_ca: Path
    client_certificate: Path
    client_key: Path
    other_ca: Path  # a CA that issued nothing the server presents
    signing_key: Path
    server_spki_sha256: str


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool, server: bool = False
) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_certificate(path: Path, certificate: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> Pki:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from inclavare.tee.sim.sigstruct import generate_signing_key

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, client_ca_key, other_key = _key(), _key(), _key()
    server_key, client_key = _key(), _key()
    files = {
        name: directory / f"{name}.pem"
        for name in (
            "ca",
            "server",
            "server-key",
            "client-ca",
            "client",
            "client-key",
            "other-ca",
            "signing-key",
        )
    }
    _write_certificate(files["ca"], _certificate("test CA", ca_key, "test CA", ca_key, True))
    _write_certificate(
        files["client-ca"],
        _certificate("client CA", client_ca_key, "client CA", client_ca_key, True),
    )
    _write_certificate(
        files["other-ca"], _certificate("other CA", other_key, "other CA", other_key, True)
    )
    _write_certificate(
        files["server"],
        _certificate("sign server", server_key, "test CA", ca_key, False, server=True),
    )
    _write_key(files["server-key"], server_key)
    _write_certificate(
        files["client"], _certificate("node-1", client_key, "client CA", client_ca_key, False)
    )
    _write_key(files["client-key"], client_key)
    files["signing-key"].write_bytes(generate_signing_key())
    spki = server_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Pki(
        directory=directory,
        ca=files["ca"],
        server_certificate=files["server"],
        server_key=files["server-key"],
        client_ca=files["client-ca"],
        client_certificate=files["client"],
        client_key=files["client-key"],
        other_ca=files["other-ca"],
        signing_key=files["signing-key"],
        server_spki_sha256=hashlib.sha256(spki).hexdigest(),
    )
