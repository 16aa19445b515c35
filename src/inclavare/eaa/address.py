"""Endpoint addresses of the attestation service: `tcp://HOST:PORT` or `unix:///PATH`."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.tls.aio import AsyncHandler, AsyncServer, AsyncSession, ErrorHandler
    from inclavare.tls.endpoint import EnclaveTls


class AddressError(InclavareError):
    """An address that is neither tcp://HOST:PORT nor unix:///PATH."""


@dataclass(frozen=True)
class Address:
    scheme: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def family(self) -> socket.AddressFamily:
        if self.scheme == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def socket_address(self) -> str | tuple[str, int]:
        return self.path if self.scheme == "unix" else (self.host, self.port)

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str, default_port: int | None = None) -> Address:
    """`tcp://127.0.0.1:1234`, `tcp://[::1]:1234`, `unix:///run/x.sock` (a bare HOST:PORT is
    taken as tcp)."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "tcp", text
    if scheme == "unix":
        if not rest.startswith("/") or "\0" in rest:
            raise AddressError(f"address {text!r}: a unix address is unix:///absolute/path")
        return Address("unix", path=rest)
    if scheme != "tcp":
        raise AddressError(f"address {text!r}: the scheme must be tcp:// or unix://")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise AddressError(f"address {text!r}: malformed IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise AddressError(f"address {text!r}: no host")
    if not port_text:
        if default_port is None:
            raise AddressError(f"address {text!r}: no port")
        return Address("tcp", host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"address {text!r}: the port must be a number from 0 to 65535")
    return Address("tcp", host, int(port_text))


async def open_session(tls: EnclaveTls, address: Address) -> AsyncSession:
    """An Enclave-TLS session with the endpoint at `address`."""
    from inclavare.tls import aio

    if address.scheme == "unix":
        return await aio.open_unix_connection(tls, address.path)
    return await aio.open_connection(tls, address.host, address.port)


async def start_session_server(
    tls: EnclaveTls,
    handler: AsyncHandler,
    address: Address,
    on_error: ErrorHandler | None = None,
    backlog: int = 128,
) -> AsyncServer:
    """An Enclave-TLS server at `address`, each client's session given to `handler`."""
    from inclavare.tls import aio

    if address.scheme == "unix":
        return await aio.start_unix_server(tls, handler, address.path, on_error, backlog)
    return await aio.start_server(tls, handler, address.host, address.port, on_error, backlog)


async def open_stream(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain stream connection to `address`."""
    if address.scheme == "unix":
        return await asyncio.open_unix_connection(address.path)
    return await asyncio.open_connection(address.host, address.port)
