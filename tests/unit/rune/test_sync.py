"""The set-up channel between rune and the container process."""

from __future__ import annotations

import pytest

from inclavare.runtime.sync import ContainerSetupError, SyncChannel


def test_an_error_report_survives_the_peer_closing_with_our_message_unread() -> None:
    """Linux answers the first read after such a close with ECONNRESET, though the peer's
    report is queued; the report is what the user must see."""
    rune_end, container_end = SyncChannel.pair()
    try:
        rune_end.send("in-cgroup")  # never read by the container
        container_end.send("error", message='exec: "x": executable file not found in $PATH')
        container_end.close()
        with pytest.raises(ContainerSetupError, match="executable file not found"):
            rune_end.receive("ready")
    finally:
        rune_end.close()
