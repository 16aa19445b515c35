"""Errors of Enclave-TLS.

Every error is an `InclavareError`: one line naming the problem, no traceback. The kinds:

- `ConfigurationError`: the configuration cannot work (unknown plugin, incompatible
  plugins, unreadable policy);
- `PluginUnavailable`: a plugin cannot run on this host (its device or interface is missing);
- `HandshakeError` and its subclasses: one connection failed; the server goes on serving.
  `PeerRejected` means this side refused the peer (its evidence, its certificate, policy);
  `RejectedByPeer` means the peer refused this side; `HandshakeTimeout` that the deadline
  passed; `ProtocolError` that the peer broke the TLS or Enclave-TLS protocol.
"""

from __future__ import annotations

from inclavare.errors import InclavareError


class EnclaveTlsError(InclavareError):
    """Base class of Enclave-TLS errors."""


class ConfigurationError(EnclaveTlsError):
    """The configuration names an unknown plugin or an impossible combination."""


class PluginUnavailable(EnclaveTlsError):
    """A plugin's init failed: what it needs is not on this host."""


class CertificateFormatError(EnclaveTlsError):
    """A certificate or its evidence extension is malformed (the reason says where)."""


class HandshakeError(EnclaveTlsError):
    """A connection could not be established; the message is the precise reason."""


class PeerRejected(HandshakeError):
    """This side refused the peer: its certificate, its evidence or the policy."""


class RejectedByPeer(HandshakeError):
    """The peer refused this side (it sent a TLS alert or an Enclave-TLS rejection)."""


class HandshakeTimeout(HandshakeError):
    """The handshake did not complete before its deadline."""


class ProtocolError(HandshakeError):
    """The peer broke the TLS or the Enclave-TLS protocol, or closed the connection."""


class ConnectionClosed(EnclaveTlsError):
    """The session is closed (by the peer or locally) or its transport failed."""
