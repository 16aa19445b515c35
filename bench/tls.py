"""Benchmark: Enclave-TLS against plain TLS 1.3, handshakes per second and bulk throughput.

In one run, over loopback, with the server in its own process:

- full handshakes per second (connect, handshake, one byte echoed, close) of Enclave-TLS with
  the sim attester and verifier and ECDSA P-256 keys, with session-bound evidence (the
  default) and without it (certificate evidence only, the interoperable mode), against plain
  TLS 1.3 with a P-256 self-signed certificate through the same library (pyOpenSSL/OpenSSL),
  the same options (no tickets) and the same client loop;
- bulk throughput over one established session (the client sends, the server counts),
  Enclave-TLS against plain TLS.

Both ratios are printed (Enclave-TLS / plain). Targets: handshakes >= 0.5, throughput >= 0.95.
Client and server share the machine's cores; on a small or busy machine the figures vary from
run to run, which the alternating rounds and medians only partly absorb.

    python bench/tls.py [--seconds N] [--megabytes N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

CHUNK = 256 * 1024


# --- plain TLS 1.3 (pyOpenSSL) ---------------------------------------------------------


def plain_contexts() -> tuple[SSL.Context, SSL.Context]:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain TLS benchmark")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    contexts = []
    for server in (True, False):
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.set_options(SSL.OP_NO_TICKET)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        if server:
            context.use_certificate(certificate)
            context.use_privatekey(key)
        else:
            # The client checks the server's signature in the handshake, as Enclave-TLS does;
            # it trusts the self-signed certificate (the callback accepts it).
            context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        contexts.append(context)
    return contexts[0], contexts[1]


def plain_server(port_out: multiprocessing.Queue, bulk: bool) -> None:  # type: ignore[type-arg]
    from OpenSSL import SSL

    server_context, _ = plain_contexts()
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port_out.put(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = SSL.Connection(server_context, sock)
        connection.set_accept_state()
        try:
            connection.do_handshake()
            if bulk:
                buffer = bytearray(1 << 20)
                while connection.recv_into(buffer):
                    pass
            else:
                connection.sendall(connection.recv(16))
            connection.shutdown()
        except SSL.Error:
            pass
        sock.close()


def plain_client(port: int) -> Callable[[], object]:
    from OpenSSL import SSL

    _, client_context = plain_contexts()

    def once() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = SSL.Connection(client_context, sock)
        connection.set_connect_state()
        connection.do_handshake()
        connection.sendall(b"x")
        connection.recv(16)
        connection.shutdown()
        sock.close()

    return once


def plain_bulk(port: int, total: int) -> float:
    from OpenSSL import SSL

    _, client_context = plain_contexts()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connection = SSL.Connection(client_context, sock)
    connection.set_connect_state()
    connection.do_handshake()
    data = b"\xa5" * CHUNK
    start = time.perf_counter()
    for _ in range(total // CHUNK):
        connection.sendall(data)
    connection.shutdown()
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # the server closes once it has read everything
    elapsed = time.perf_counter() - start
    sock.close()
    return total / elapsed


# --- Enclave-TLS -----------------------------------------------------------------------


def etls_config(server: bool, session_evidence: bool) -> object:
    from inclavare.tls.config import Config

    return Config(
        attester="sim" if server else None,
        verifier="sim" if not server else None,
        crypto="openssl",
        tls="openssl",
        key_type="ec-p256",
        allow_simulated=True,
        session_evidence=session_evidence,
    )


def etls_server(port_out: multiprocessing.Queue, bulk: bool, session_evidence: bool) -> None:  # type: ignore[type-arg]
    from inclavare.tls.blocking import Listener
    from inclavare.tls.endpoint import EnclaveTls
    from inclavare.tls.errors import EnclaveTlsError

    tls = EnclaveTls(etls_config(True, session_evidence), server=True)  # type: ignore[arg-type]
    listener = Listener(tls, ("127.0.0.1", 0))
    port_out.put(listener.address[1])
    while True:
        try:
            session = listener.accept()
        except EnclaveTlsError:
            continue
        try:
            if bulk:
                buffer = bytearray(1 << 20)
                while session.recv_into(buffer):
                    pass
            else:
                session.sendall(session.recv(16))
        except (EnclaveTlsError, OSError):
            pass
        session.close()


def etls_client(port: int, session_evidence: bool) -> Callable[[], object]:
    from inclavare.tls.blocking import connect
    from inclavare.tls.endpoint import EnclaveTls

    tls = EnclaveTls(etls_config(False, session_evidence), server=False)  # type: ignore[arg-type]

    def once() -> None:
        session = connect(tls, ("127.0.0.1", port))
        assert session.peer is not None and session.peer.verified
        session.sendall(b"x")
        session.recv(16)
        session.close()

    return once


def etls_bulk(port: int, total: int, session_evidence: bool) -> float:
    from inclavare.tls.blocking import connect
    from inclavare.tls.endpoint import EnclaveTls

    tls = EnclaveTls(etls_config(False, session_evidence), server=False)  # type: ignore[arg-type]
    session = connect(tls, ("127.0.0.1", port))
    data = b"\xa5" * CHUNK
    start = time.perf_counter()
    for _ in range(total // CHUNK):
        session.sendall(data)
    session.close_write()
    session.recv(1)
    elapsed = time.perf_counter() - start
    session.close()
    return total / elapsed


# --- harness ---------------------------------------------------------------------------


def rate(operation: Callable[[], object], seconds: float) -> float:
    for _ in range(5):
        operation()
    count = 0
    start = time.perf_counter()
    while True:
        operation()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def with_server(target: Callable[..., None], *args: object) -> tuple[Any, int]:
    context = multiprocessing.get_context("fork")
    ports: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    process = context.Process(target=target, args=(ports, *args), daemon=True)
    process.start()
    return process, int(ports.get(timeout=30))


def stop(process: Any) -> None:
    process.terminate()
    process.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per handshake configuration")
    parser.add_argument("--megabytes", type=int, default=512, help="per throughput measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating handshake rounds")
    args = parser.parse_args()
    total = args.megabytes * 1024 * 1024 // CHUNK * CHUNK

    sim_dir = tempfile.mkdtemp(prefix="bench-tls-sim-")
    os.environ["INCLAVARE_SIM_DIR"] = str(Path(sim_dir) / "sim")
    from inclavare.tee.sim.store import load_platform

    load_platform()  # create the simulated platform once, before the processes fork
    try:
        # The three configurations are measured in alternating rounds, each figure being the
        # median of its rounds, so that a slow moment of the machine hits them alike.
        setups: dict[str, tuple[Callable[..., None], Callable[..., Any], tuple[bool, ...]]] = {
            "plain": (plain_server, plain_client, ()),
            "etls": (etls_server, etls_client, (True,)),
            "etls-cert": (etls_server, etls_client, (False,)),
        }
        servers = {
            name: with_server(target, False, *extra) for name, (target, _, extra) in setups.items()
        }
        try:
            clients = {
                name: client(servers[name][1], *extra)
                for name, (_, client, extra) in setups.items()
            }
            rounds: dict[str, list[float]] = {name: [] for name in setups}
            for _ in range(args.rounds):
                for name, once in clients.items():
                    rounds[name].append(rate(once, args.seconds / args.rounds))
        finally:
            for process, _ in servers.values():
                stop(process)
        results = {name: statistics.median(values) for name, values in rounds.items()}
        bulk_setups: dict[str, tuple[Callable[..., None], Callable[..., Any], tuple[bool, ...]]] = {
            "plain": (plain_server, plain_bulk, ()),
            "etls": (etls_server, etls_bulk, (True,)),
        }
        servers = {
            name: with_server(target, True, *extra)
            for name, (target, _, extra) in bulk_setups.items()
        }
        try:
            samples: dict[str, list[float]] = {name: [] for name in bulk_setups}
            for name, (_, runner, extra) in bulk_setups.items():
                runner(servers[name][1], 4 * CHUNK, *extra)
            for _ in range(3):
                for name, (_, runner, extra) in bulk_setups.items():
                    samples[name].append(runner(servers[name][1], total, *extra))
        finally:
            for process, _ in servers.values():
                stop(process)
        throughput = {name: statistics.median(values) for name, values in samples.items()}
    finally:
        shutil.rmtree(sim_dir, ignore_errors=True)

    print("Enclave-TLS vs plain TLS 1.3 (ECDSA P-256, OpenSSL through pyOpenSSL, loopback)")
    print(f"  plain TLS 1.3 handshakes/s:                         {results['plain']:8.1f}")
    print(f"  Enclave-TLS handshakes/s, session-bound evidence:   {results['etls']:8.1f}")
    print(f"  Enclave-TLS handshakes/s, certificate evidence only:{results['etls-cert']:8.1f}")
    print(f"  plain TLS 1.3 throughput:      {throughput['plain'] / 1e6:8.1f} MB/s")
    print(f"  Enclave-TLS throughput:        {throughput['etls'] / 1e6:8.1f} MB/s")
    print(
        f"handshake ratio (session-bound evidence): {results['etls'] / results['plain']:.2f} "
        "(target >= 0.5)"
    )
    print(
        "handshake ratio (certificate evidence only): "
        f"{results['etls-cert'] / results['plain']:.2f}"
    )
    print(f"throughput ratio: {throughput['etls'] / throughput['plain']:.2f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
