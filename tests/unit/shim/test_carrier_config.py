"""config.toml of the carrier: every key, and a one-line error naming each malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from inclavare.shim.config import (
    DEFAULT_CACHE_SIZE,
    ConfigError,
    config_path,
    load,
    parse_size,
)

FULL = """
log_level = "debug"
[containerd]
socket = "/run/k8s/containerd.sock"
[enclave_runtime]
signature_method = "server"
accepted_signers = ["{signer}"]
[enclave_runtime.signature_server]
address = "https://127.0.0.1:9443"
ca = "/etc/ca.pem"
client_certificate = "/etc/node.pem"
client_key = "/etc/node-key.pem"
timeout = 2.5
[enclave_runtime.cache]
directory = "/var/cache/x"
max_size = "2MiB"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_every_key_is_read(tmp_path: Path) -> None:
    config = load(write(tmp_path, FULL.format(signer="ab" * 32)))
    assert config.log_level == "debug"
    assert config.containerd_socket == "/run/k8s/containerd.sock"
    assert config.signature_method == "server"
    assert config.accepted_signers == (bytes.fromhex("ab" * 32),)
    server = config.server
    assert server is not None
    assert (server.host, server.port, server.ca) == ("127.0.0.1", 9443, "/etc/ca.pem")
    assert (server.client_certificate, server.client_key) == ("/etc/node.pem", "/etc/node-key.pem")
    assert server.timeout == 2.5
    assert (config.cache_directory, config.cache_max_size) == ("/var/cache/x", 2 << 20)


def test_no_file_means_the_defaults_and_the_local_key(tmp_path: Path) -> None:
    config = load(str(tmp_path / "absent.toml"))
    assert (config.path, config.signature_method) == (None, "key")
    assert config.cache_max_size == DEFAULT_CACHE_SIZE
    with pytest.raises(ConfigError, match=r"absent\.toml: no such file"):
        load(str(tmp_path / "absent.toml"), required=True)


def test_the_path_comes_from_the_options_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INCLAVARE_CONFIG", "/from/env.toml")
    assert config_path("/from/options.toml") == "/from/options.toml"
    assert config_path("") == "/from/env.toml"
    monkeypatch.delenv("INCLAVARE_CONFIG")
    assert config_path("") == "/etc/inclavare-containers/config.toml"


def test_a_pinned_key_instead_of_a_ca(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            '[enclave_runtime.signature_server]\naddress = "https://[::1]"\n'
            f'pinned_key_sha256 = "{"0f" * 32}"\n',
        )
    )
    assert config.server is not None
    assert (config.server.host, config.server.port) == ("::1", 443)
    assert config.server.pinned_key_sha256 == bytes.fromhex("0f" * 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log_level = 'loud'", "log_level: 'loud' is not one of"),
        ("colour = 1", "colour: unknown key"),
        ("containerd = 3", "containerd: must be a table"),
        ("[containerd]\nsockets = 'x'", "containerd.sockets: unknown key"),
        ("[containerd]\nsocket = ''", "containerd.socket: must be a non-empty string"),
        ("[enclave_runtime]\nsignature_method = 'hsm'", "enclave_runtime.signature_method: 'hsm'"),
        (
            "[enclave_runtime]\nsignature_method = 'server'",
            'signature_method = "server" needs [enclave_runtime.signature_server] address',
        ),
        ("[enclave_runtime]\naccepted_signers = 'ab'", "enclave_runtime.accepted_signers: must"),
        ("[enclave_runtime]\naccepted_signers = ['xy']", "'xy' is not an MRSIGNER"),
        (
            "[enclave_runtime.signature_server]\nca = '/ca'",
            "enclave_runtime.signature_server.address: is missing",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'http://h:1'\nca = '/ca'",
            "enclave_runtime.signature_server.address: 'http://h:1' is not https://HOST[:PORT]",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'https://h:99999'\nca = '/ca'",
            "is not https://HOST[:PORT]",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'https://h'",
            "names neither ca nor pinned_key_sha256",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'https://h'\npinned_key_sha256 = 'ab'",
            "enclave_runtime.signature_server.pinned_key_sha256: must be",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'https://h'\nca = '/c'\n"
            "client_key = '/k'",
            "client_certificate and client_key go together",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'https://h'\nca = '/c'\ntimeout = 0",
            "enclave_runtime.signature_server.timeout: must be a positive number",
        ),
        (
            "[enclave_runtime.signature_server]\naddress = 'https://h'\nca = '/c'\nport = 1",
            "enclave_runtime.signature_server.port: unknown key",
        ),
        ("[enclave_runtime.cache]\nmax_size = '12 parsecs'", "max_size: '12 parsecs' is not"),
        ("[enclave_runtime.cache]\nmax_size = -1", "enclave_runtime.cache.max_size: must not"),
        ("[enclave_runtime.cache]\nmax_size = true", "enclave_runtime.cache.max_size: must be"),
        ("[enclave_runtime.cache]\ndirectory = 7", "enclave_runtime.cache.directory: must be"),
        ("[enclave_runtime.cache]\nttl = 7", "enclave_runtime.cache.ttl: unknown key"),
        ("log_level = ", "not valid TOML"),
    ],
)
def test_a_malformed_value_is_named_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(path)
    assert "\n" not in str(caught.value)


def test_sizes() -> None:
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("4096") == 4096
    assert parse_size(" 1 GiB ") == 1 << 30
    for bad in ("1.5MiB", "MiB", "2MB", "-1"):
        with pytest.raises(ValueError):
            parse_size(bad)
