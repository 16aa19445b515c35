"""The shim's `delete` action: containerd runs it in the bundle after a shim exited.

It is on the critical path of every container's removal (containerd runs it even after a
clean shutdown), so it imports nothing it does not use.
"""

from __future__ import annotations

import os
import sys
import time

from inclavare.errors import InclavareError

_SIGKILL = 9  # the signal module would cost more than this action's own work


class CleanupError(InclavareError):
    pass


def delete(namespace: str, container_id: str, bundle: str) -> int:
    """containerd lost the shim: force-delete the container, unmount its rootfs, and print a
    DeleteResponse (killed: 128 + SIGKILL) on standard output."""
    from inclavare.shim.bundle import DEFAULT_BINARY, ROOT_DIRECTORY, read_options
    from inclavare.shim.mounts import unmount_all

    bundle = bundle or os.getcwd()
    options = read_options(bundle)
    binary = str(options.get("binary_name") or DEFAULT_BINARY)
    root = str(options.get("root") or os.path.join(ROOT_DIRECTORY, namespace))
    command = [binary, "--root", root, "--log", os.path.join(bundle, "log.json")]
    command += ["--log-format", "json", "delete", "--force", container_id]
    # containerd runs this after every shim's exit; most often the shim deleted the
    # container itself and there is no state left for the runtime to remove
    if os.path.exists(os.path.join(root, container_id)):
        import subprocess

        try:
            subprocess.run(command, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            sys.stderr.write(f"{binary} delete: {error}\n")
    _remove_dead_socket(bundle)
    try:
        unmount_all(os.path.join(bundle, "rootfs"))
    except OSError as error:
        raise CleanupError(f"unmount {bundle}/rootfs: {error.strerror}") from None
    sys.stdout.buffer.write(delete_response(128 + _SIGKILL, time.time_ns()))
    return 0


def delete_response(exit_status: int, exited_at_ns: int) -> bytes:
    """DeleteResponse{exit_status=2, exited_at=3 (Timestamp{seconds=1, nanos=2})}, encoded
    here: importing the protobuf runtime would double this action's time."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    stamp = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(nanos) if nanos else b""
    )
    return b"\x10" + varint(exit_status) + b"\x1a" + varint(len(stamp)) + stamp


def _remove_dead_socket(bundle: str) -> None:
    """A shim that was killed leaves its socket behind; one that still answers (serving
    other containers of its pod) keeps it."""
    try:
        with open(os.path.join(bundle, "address")) as address:
            path = address.read().strip().removeprefix("unix://")
    except OSError:
        return
    if not path or not os.path.exists(path):
        return  # the usual case: the shim removed it when it shut down
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    try:
        os.unlink(path)
    except OSError:
        pass
