"""`/etc/inclavare-containers/config.toml`: how the shim's carrier signs and caches.

    log_level = "info"                       # "debug" | "info" | "warning" | "error"
    [containerd]
    socket = "/run/containerd/containerd.sock"
    [enclave_runtime]
    signature_method = "server"              # "server" | "client" | "key"
    signing_key = "/etc/inclavare-containers/enclave-signing-key.pem"   # method "key"
    accepted_signers = ["<MRSIGNER hex>", ...]                          # optional
    [enclave_runtime.signature_server]
    address = "https://127.0.0.1:9443"
    ca = "/etc/inclavare-containers/sign-server-ca.pem"   # or pinned_key_sha256 = "<hex>"
    client_certificate = "..."               # optional, both or neither: mutual TLS
    client_key = "..."
    timeout = 10                             # seconds
    [enclave_runtime.cache]
    directory = "/var/cache/inclavare-containers/carrier"
    max_size = "512MiB"                      # bytes, or a number with KiB/MiB/GiB; 0: no cache

The file is optional: without it the method is "key" (the runtime options' SigningKey, else
`signing_key`, else the default key path) and conversions are cached in the default
directory. Every malformed value and every unknown key is refused with a one-line error
naming the key. Loading needs only the standard library (tomllib).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from inclavare.errors import InclavareError

DEFAULT_PATH = "/etc/inclavare-containers/config.toml"
# a test, or a node with its configuration elsewhere, names the file here; the runtime
# options' InclavareConfig key wins over both
ENVIRONMENT_VARIABLE = "INCLAVARE_CONFIG"
DEFAULT_SIGNING_KEY = "/etc/inclavare-containers/enclave-signing-key.pem"
DEFAULT_CACHE_DIRECTORY = "/var/cache/inclavare-containers/carrier"
DEFAULT_CACHE_SIZE = 512 * 1024 * 1024
DEFAULT_SOCKET = "/run/containerd/containerd.sock"
DEFAULT_TIMEOUT = 10.0
LOG_LEVELS = ("debug", "info", "warning", "error")
METHODS = ("server", "client", "key")
_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")


class ConfigError(InclavareError):
    """config.toml cannot be read or holds a malformed value."""


@dataclass(frozen=True)
class SignatureServer:
    address: str
    host: str
    port: int
    ca: str | None = None
    pinned_key_sha256: bytes | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Config:
    path: str | None = None  # None: no file, the defaults
    log_level: str = "info"
    containerd_socket: str = DEFAULT_SOCKET
    signature_method: str = "key"
    signing_key: str = DEFAULT_SIGNING_KEY
    accepted_signers: tuple[bytes, ...] = ()
    server: SignatureServer | None = None
    cache_directory: str = DEFAULT_CACHE_DIRECTORY
    cache_max_size: int = DEFAULT_CACHE_SIZE


def config_path(options_path: str = "") -> str:
    """Which file to read: the runtime options' InclavareConfig, INCLAVARE_CONFIG, the
    default."""
    return options_path or os.environ.get(ENVIRONMENT_VARIABLE) or DEFAULT_PATH


def load(path: str, required: bool = False) -> Config:
    """The configuration in `path`; the defaults when the file does not exist (unless
    `required`: a file someone named must be there)."""
    import tomllib

    try:
        with open(path, "rb") as stream:
            table = tomllib.load(stream)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Config()
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse(table, path)


def parse(table: dict[str, Any], path: str = "config.toml") -> Config:
    """The configuration of a parsed TOML document."""
    reader = _Reader(path)
    top = reader.table(table, "", ("log_level", "containerd", "enclave_runtime"))
    log_level = reader.choice(top, "log_level", LOG_LEVELS, "info")
    containerd = reader.table(top.get("containerd", {}), "containerd", ("socket",))
    socket = reader.path(containerd, "containerd.socket", "socket", DEFAULT_SOCKET)
    runtime = reader.table(
        top.get("enclave_runtime", {}),
        "enclave_runtime",
        ("signature_method", "signing_key", "accepted_signers", "signature_server", "cache"),
    )
    method = reader.choice(runtime, "signature_method", METHODS, "key", "enclave_runtime.")
    signing_key = reader.path(
        runtime, "enclave_runtime.signing_key", "signing_key", DEFAULT_SIGNING_KEY
    )
    signers = reader.signers(runtime)
    server = reader.server(runtime.get("signature_server"))
    if method == "server" and server is None:
        raise ConfigError(
            f'{path}: enclave_runtime.signature_method = "server" needs '
            "[enclave_runtime.signature_server] address"
        )
    cache = reader.table(
        runtime.get("cache", {}), "enclave_runtime.cache", ("directory", "max_size")
    )
    directory = reader.path(
        cache, "enclave_runtime.cache.directory", "directory", DEFAULT_CACHE_DIRECTORY
    )
    max_size = reader.size(cache, "enclave_runtime.cache.max_size", "max_size")
    return Config(
        path=path,
        log_level=log_level,
        containerd_socket=socket,
        signature_method=method,
        signing_key=signing_key,
        accepted_signers=signers,
        server=server,
        cache_directory=directory,
        cache_max_size=max_size,
    )


def parse_size(text: str) -> int:
    """Bytes of "512MiB", "4096", "1 GiB"; ValueError otherwise."""
    match = _SIZE.fullmatch(text)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(text)
    return int(match.group(1)) * _UNITS[match.group(2)]


class _Reader:
    def __init__(self, path: str) -> None:
        self.path_name = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path_name}: {key}: {problem}")

    def table(self, value: Any, name: str, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            return self._not_a_table(name)
        for key in value:
            if key not in known:
                full = f"{name}.{key}" if name else key
                raise self.fail(full, f"unknown key (known: {', '.join(known)})")
        return value

    def _not_a_table(self, name: str) -> dict[str, Any]:
        raise self.fail(name, "must be a table")

    def choice(
        self,
        table: dict[str, Any],
        key: str,
        allowed: tuple[str, ...],
        default: str,
        prefix: str = "",
    ) -> str:
        value = table.get(key, default)
        if value not in allowed:
            quoted = ", ".join(f'"{item}"' for item in allowed)
            raise self.fail(f"{prefix}{key}", f"{value!r} is not one of {quoted}")
        return str(value)

    def path(self, table: dict[str, Any], full: str, key: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(full, "must be a non-empty string (a path)")
        if "\0" in value:
            raise self.fail(full, "must not contain a NUL character")
        return value

    def optional_path(self, table: dict[str, Any], full: str, key: str) -> str | None:
        return self.path(table, full, key, "") if key in table else None

    def size(self, table: dict[str, Any], full: str, key: str) -> int:
        value = table.get(key, DEFAULT_CACHE_SIZE)
        if isinstance(value, bool):
            raise self.fail(full, 'must be a number of bytes or a size such as "512MiB"')
        if isinstance(value, int):
            if value < 0:
                raise self.fail(full, "must not be negative")
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError:
                pass
        raise self.fail(full, f'{value!r} is not a number of bytes or a size such as "512MiB"')

    def signers(self, runtime: dict[str, Any]) -> tuple[bytes, ...]:
        full = "enclave_runtime.accepted_signers"
        value = runtime.get("accepted_signers", [])
        if not isinstance(value, list):
            raise self.fail(full, "must be a list of MRSIGNER values (64 hex digits each)")
        found = []
        for item in value:
            if not isinstance(item, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", item):
                raise self.fail(full, f"{item!r} is not an MRSIGNER (64 hex digits)")
            found.append(bytes.fromhex(item))
        return tuple(found)

    def server(self, value: Any) -> SignatureServer | None:
        if value is None:
            return None
        name = "enclave_runtime.signature_server"
        table = self.table(
            value,
            name,
            ("address", "ca", "pinned_key_sha256", "client_certificate", "client_key", "timeout"),
        )
        if "address" not in table:
            raise self.fail(f"{name}.address", "is missing")
        address = table["address"]
        match = (
            re.fullmatch(r"https://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?", address)
            if isinstance(address, str)
            else None
        )
        if match is None or not 0 < int(match.group(2) or 443) < 65536:
            raise self.fail(f"{name}.address", f"{address!r} is not https://HOST[:PORT] (TLS only)")
        ca = self.optional_path(table, f"{name}.ca", "ca")
        pinned: bytes | None = None
        if "pinned_key_sha256" in table:
            text = table["pinned_key_sha256"]
            if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", text):
                raise self.fail(
                    f"{name}.pinned_key_sha256", "must be the SHA-256 of the server's key (64 hex)"
                )
            pinned = bytes.fromhex(text)
        if ca is None and pinned is None:
            raise self.fail(
                name, "names neither ca nor pinned_key_sha256: the server would not be verified"
            )
        certificate = self.optional_path(table, f"{name}.client_certificate", "client_certificate")
        key = self.optional_path(table, f"{name}.client_key", "client_key")
        if (certificate is None) != (key is None):
            raise self.fail(
                f"{name}.client_certificate", "client_certificate and client_key go together"
            )
        timeout = table.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise self.fail(f"{name}.timeout", "must be a positive number of seconds")
        return SignatureServer(
            address=address.rstrip("/"),
            host=match.group(1).strip("[]"),
            port=int(match.group(2) or 443),
            ca=ca,
            pinned_key_sha256=pinned,
            client_certificate=certificate,
            client_key=key,
            timeout=float(timeout),
        )
