"""The small parts of the attestation chain: secrets sealed to the enclave (secret.py),
endpoint addresses (address.py), the sim attestation channel's format (tee/sim/channel.py)
and inclavared's metrics text (metrics.py)."""

from __future__ import annotations

import os
import re
import socket

import pytest

from inclavare.eaa.address import Address, AddressError, parse_address
from inclavare.eaa.metrics import LATENCY_BUCKETS, Metrics
from inclavare.eaa.secret import MAX_SECRET, Sealed, SecretError, SecretKey, seal
from inclavare.tee.sim import channel
from inclavare.tee.sim.channel import ChannelError

NONCE = os.urandom(32)
DOES_NOT_OPEN = "does not open: sealed for another key, name or nonce, or altered"

# --- secret.py ------------------------------------------------------------------------------


def test_a_sealed_secret_opens_for_its_key_name_and_nonce_only() -> None:
    key = SecretKey()
    sealed = seal(key.public, b"s3cr3t", "db-password", NONCE)
    assert len(sealed.ephemeral) == 32 and b"s3cr3t" not in sealed.ciphertext
    assert key.open(sealed, "db-password", NONCE) == b"s3cr3t"
    # Each sealing is fresh: another ephemeral key and IV.
    again = seal(key.public, b"s3cr3t", "db-password", NONCE)
    assert again.ephemeral != sealed.ephemeral and again.ciphertext != sealed.ciphertext

    refusals = {
        "another name": (sealed, "api-token", NONCE),
        "another nonce": (sealed, "db-password", os.urandom(32)),
        "altered": (
            Sealed(sealed.ephemeral, sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])),
            "db-password",
            NONCE,
        ),
        "altered iv": (
            Sealed(sealed.ephemeral, bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]),
            "db-password",
            NONCE,
        ),
        "truncated": (Sealed(sealed.ephemeral, sealed.ciphertext[:5]), "db-password", NONCE),
        "other ephemeral": (Sealed(SecretKey().public, sealed.ciphertext), "db-password", NONCE),
    }
    for case, (candidate, name, nonce) in refusals.items():
        with pytest.raises(SecretError) as caught:
            key.open(candidate, name, nonce)
        assert str(caught.value) == f"secret {name!r} {DOES_NOT_OPEN}", case
    with pytest.raises(SecretError, match=f"secret 'db-password' {DOES_NOT_OPEN}"):
        SecretKey().open(sealed, "db-password", NONCE)


def test_bad_keys_and_oversized_secrets_are_refused() -> None:
    key = SecretKey()
    sealed = seal(key.public, b"x", "n", NONCE)
    with pytest.raises(SecretError) as caught:
        key.open(Sealed(b"\x01" * 31, sealed.ciphertext), "n", NONCE)
    assert str(caught.value) == "secret 'n': the sender's key is not an X25519 key"
    # An all-zero point gives an all-zero shared secret, which X25519 refuses.
    with pytest.raises(SecretError, match="the sender's key is not an X25519 key"):
        key.open(Sealed(bytes(32), sealed.ciphertext), "n", NONCE)
    with pytest.raises(SecretError) as caught:
        seal(b"short", b"x", "n", NONCE)
    assert str(caught.value) == "the enclave's secret-key claim is not an X25519 public key"
    with pytest.raises(SecretError) as caught:
        seal(key.public, b"x" * (MAX_SECRET + 1), "big", NONCE)
    assert str(caught.value) == f"secret 'big' is {MAX_SECRET + 1} bytes; the limit is {MAX_SECRET}"
    assert key.open(seal(key.public, b"x" * MAX_SECRET, "big", NONCE), "big", NONCE) == (
        b"x" * MAX_SECRET
    )


# --- address.py -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("tcp://127.0.0.1:1234", Address("tcp", "127.0.0.1", 1234), "tcp://127.0.0.1:1234"),
        ("127.0.0.1:80", Address("tcp", "127.0.0.1", 80), "tcp://127.0.0.1:80"),
        ("tcp://localhost:0", Address("tcp", "localhost", 0), "tcp://localhost:0"),
        ("tcp://[::1]:65535", Address("tcp", "::1", 65535), "tcp://[::1]:65535"),
        ("tcp://[fe80::1%eth0]:9", Address("tcp", "fe80::1%eth0", 9), "tcp://[fe80::1%eth0]:9"),
        ("unix:///run/x.sock", Address("unix", path="/run/x.sock"), "unix:///run/x.sock"),
    ],
)
def test_addresses_parse_and_print_back(text: str, expected: Address, shown: str) -> None:
    assert parse_address(text) == expected
    assert str(expected) == shown
    assert parse_address(str(expected)) == expected


def test_a_default_port_fills_in() -> None:
    assert parse_address("tcp://example", default_port=9) == Address("tcp", "example", 9)
    assert parse_address("tcp://[::1]", default_port=9) == Address("tcp", "::1", 9)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://x:1", "the scheme must be tcp:// or unix://"),
        ("unix://relative.sock", "a unix address is unix:///absolute/path"),
        ("unix:///a\0b", "a unix address is unix:///absolute/path"),
        ("tcp://[::1:80", "malformed IPv6 address"),
        ("tcp://[::1]80", "malformed IPv6 address"),
        ("tcp://:80", "no host"),
        ("tcp://[]:80", "no host"),
        ("tcp://example", "no port"),
        ("tcp://example:", "no port"),
        ("tcp://example:http", "the port must be a number from 0 to 65535"),
        ("tcp://example:65536", "the port must be a number from 0 to 65535"),
        ("tcp://example:-1", "the port must be a number from 0 to 65535"),
    ],
)
def test_bad_addresses_are_named(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert str(caught.value) == f"address {text!r}: {reason}"


# --- tee/sim/channel.py ---------------------------------------------------------------------


def test_channel_requests_and_replies_round_trip() -> None:
    data = bytes(range(64))
    assert channel.parse_request(channel.encode_request(data)) == data
    assert channel.parse_reply(channel.encode_quote(b"a quote")) == b"a quote"
    with pytest.raises(ChannelError) as caught:
        channel.parse_reply(channel.encode_error("no such\n enclave"))
    assert str(caught.value) == "the enclave runtime refused: no such enclave"
    assert len(channel.encode_error("x" * 100_000)) == channel.MAX_PACKET


def test_malformed_channel_packets_are_named() -> None:
    with pytest.raises(ChannelError, match="report data must be 64 bytes, not 63"):
        channel.encode_request(bytes(63))
    for packet in (b"", b"QUOT" + bytes(63), b"QUOT" + bytes(65), b"QUIT" + bytes(64)):
        with pytest.raises(ChannelError) as caught:
            channel.parse_request(packet)
        assert str(caught.value) == (
            f"malformed attestation request ({len(packet)} bytes; expected QUOT and 64 bytes "
            "of report data)"
        )
    for packet in (b"", b"QUOT", b"NOPE anything"):
        with pytest.raises(ChannelError) as caught:
            channel.parse_reply(packet)
        assert str(caught.value) == f"malformed attestation reply ({len(packet)} bytes)"
    with pytest.raises(ChannelError, match="refused: \ufffd"):
        channel.parse_reply(b"ERR \xff")


def test_the_channel_descriptor_comes_from_the_environment() -> None:
    assert channel.channel_fd({}) is None
    assert channel.channel_fd({channel.ENVIRONMENT_VARIABLE: ""}) is None
    assert channel.channel_fd({channel.ENVIRONMENT_VARIABLE: "7"}) == 7
    with pytest.raises(ChannelError) as caught:
        channel.channel_fd({channel.ENVIRONMENT_VARIABLE: "x7"})
    assert str(caught.value) == "INCLAVARE_ATTESTATION_FD='x7' is not a descriptor number"


def test_request_quote_over_a_socket_pair() -> None:
    ours, runtime = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, runtime:
        runtime.send(channel.encode_quote(b"quote"))  # queued before the request: one reply
        assert channel.request_quote(ours.fileno(), bytes(64)) == b"quote"
        assert channel.parse_request(runtime.recv(channel.MAX_PACKET)) == bytes(64)
        runtime.send(channel.encode_error("not this enclave"))
        with pytest.raises(ChannelError, match="refused: not this enclave"):
            channel.request_quote(ours.fileno(), bytes(64))
        with pytest.raises(ChannelError, match="timed out"):
            channel.request_quote(ours.fileno(), bytes(64), timeout=0.05)
    stream_a, stream_b = socket.socketpair()
    refused = pytest.raises(ChannelError, match=r"descriptor \d+ is not an attestation channel")
    with stream_a, stream_b, refused:
        channel.request_quote(stream_a.fileno(), bytes(64))
    with pytest.raises(
        ChannelError, match=r"\(descriptor 987654\) is not usable: Bad file descriptor"
    ):
        channel.request_quote(987654, bytes(64))


# --- metrics.py -----------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z]+="[^"]*"(?:,[a-z]+="[^"]*")*\})? (\S+)$')


def _parse(text: str) -> tuple[dict[str, str], dict[str, float]]:
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4
        else:
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert family in types or name in types, f"{name} has no TYPE line"
            values[name + (labels or "")] = float(value)
    return types, values


def test_metrics_render_as_prometheus_text() -> None:
    metrics = Metrics()
    types, values = _parse(metrics.render())
    assert types == {
        "inclavared_sessions_total": "counter",
        "inclavared_sessions_active": "gauge",
        "inclavared_session_ends_total": "counter",
        "inclavared_verifications_total": "counter",
        "inclavared_forwarded_bytes_total": "counter",
        "inclavared_attestation_seconds": "histogram",
    }
    assert values["inclavared_attestation_seconds_count"] == 0

    metrics.sessions_total = 5
    metrics.sessions_active = 1
    metrics.session_ends["completed"] += 3
    metrics.session_ends["enclave-rejected"] += 1
    metrics.verifications["enclave", "verified"] += 3
    metrics.verifications["enclave", "rejected"] += 1
    metrics.bytes_forwarded["to-enclave"] += 1000
    observed = [0.001, 0.005, 0.02, 0.3, 0.3, 4.0, 60.0]
    for seconds in observed:
        metrics.observe_attestation(seconds)
    _, values = _parse(metrics.render())
    assert values["inclavared_sessions_total"] == 5
    assert values['inclavared_session_ends_total{outcome="enclave-rejected"}'] == 1
    assert values['inclavared_verifications_total{party="enclave",result="rejected"}'] == 1
    assert values['inclavared_forwarded_bytes_total{direction="to-enclave"}'] == 1000
    buckets = [
        values[f'inclavared_attestation_seconds_bucket{{le="{bound}"}}']
        for bound in LATENCY_BUCKETS
    ]
    infinite = values['inclavared_attestation_seconds_bucket{le="+Inf"}']
    # Cumulative: each bucket counts every observation at or below its bound.
    assert buckets == [sum(1 for s in observed if s <= bound) for bound in LATENCY_BUCKETS]
    assert buckets == sorted(buckets) and buckets[-1] <= infinite
    assert infinite == values["inclavared_attestation_seconds_count"] == len(observed)
    assert values["inclavared_attestation_seconds_sum"] == pytest.approx(sum(observed), abs=1e-5)
