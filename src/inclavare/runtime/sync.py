"""Messages between rune and the container process it is setting up.

rune and the forked container process talk over a SOCK_SEQPACKET socket pair: each message is
one JSON object with a "type". The container side reports progress ("child", "hooks",
"ready") or a failure ("error", with the one-line reason); rune answers ("state", "hooks-done",
"idmapped", "in-cgroup"). The socket keeps message boundaries, so no framing is needed.
"""

from __future__ import annotations

import _socket
import os

from inclavare import lightjson
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX_MESSAGE = 1 << 20


class ContainerSetupError(InclavareError):
    """The container process failed while being set up; the message says why."""


class SyncChannel:
    """One end of the socket pair."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @staticmethod
    def pair() -> tuple[SyncChannel, SyncChannel]:
        """(rune's end, the container's end), both close-on-exec."""
        first, second = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        return SyncChannel(first.detach()), SyncChannel(second.detach())

    def send(self, kind: str, **fields: Any) -> None:
        fields["type"] = kind
        try:
            os.write(self.fd, lightjson.dumps(fields).encode())
        except (BrokenPipeError, ConnectionResetError):
            # The peer is gone; it may have said why before leaving.
            self.receive()
            raise ContainerSetupError("container process exited during set-up") from None

    def receive(self, expected: str | None = None) -> dict[str, Any]:
        """The next message; ContainerSetupError if the peer reported an error or went away."""
        try:
            raw = os.read(self.fd, _MAX_MESSAGE)
        except ConnectionResetError:
            # The peer closed with a message of ours unread. Linux reports that once, before
            # delivering what the peer sent: its error report is still queued.
            raw = os.read(self.fd, _MAX_MESSAGE)
        if not raw:
            raise ContainerSetupError("container init exited without reporting why")
        message: dict[str, Any] = lightjson.loads(raw)
        if message.get("type") == "error":
            raise ContainerSetupError(str(message.get("message")))
        if expected is not None and message.get("type") != expected:
            raise ContainerSetupError(
                f"container init sent {message.get('type')!r} while {expected!r} was expected"
            )
        return message

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
