"""Publishing task events to containerd.

containerd 1.6 gives its shims two ways back: the ttrpc Events service on the socket named by
the TTRPC_ADDRESS environment variable (what its own shims use), and the `-publish-binary`
program (`containerd --address A publish --topic T --namespace NS`, the event as a protobuf
Any on standard input). The ttrpc service is tried first, it costs no process; the binary is
the fallback. Events go out one at a time in the order they happened, in a thread, and are
retried for a while: containerd may be restarting.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from inclavare.shim.ttrpc import bytes_field, varint_field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.shim.reaper import Reaper
    from inclavare.shim.ttrpc_server import Client

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
ATTEMPTS = 5


def any_bytes(type_url: str, value: bytes) -> bytes:
    """A google.protobuf.Any, encoded (type_url=1, value=2)."""
    return bytes_field(1, type_url.encode()) + (bytes_field(2, value) if value else b"")


def forward_request(namespace: str, topic: str, event: bytes, when_ns: int) -> bytes:
    """ForwardRequest{envelope=1: Envelope{timestamp=1, namespace=2, topic=3, event=4}}."""
    envelope = (
        bytes_field(1, timestamp(when_ns))
        + bytes_field(2, namespace.encode())
        + bytes_field(3, topic.encode())
        + bytes_field(4, event)
    )
    return bytes_field(1, envelope)


def timestamp(nanoseconds: int) -> bytes:
    """A google.protobuf.Timestamp (seconds=1, nanos=2), encoded."""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    return (varint_field(1, seconds) if seconds else b"") + (
        varint_field(2, nanos) if nanos else b""
    )


class Publisher:
    def __init__(
        self,
        namespace: str,
        address: str,
        publish_binary: str,
        ttrpc_address: str,
        log: Callable[[str], None],
        reaper: Reaper,
    ) -> None:
        self.reaper = reaper
        self.namespace = namespace
        self.address = address
        self.publish_binary = publish_binary
        self.ttrpc_address = ttrpc_address.removeprefix("unix://")
        self.log = log
        self._queue: queue.Queue[tuple[str, bytes, int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish(self, topic: str, type_url: str, message: bytes) -> None:
        self._queue.put((topic, any_bytes(type_url, message), time.time_ns()))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by timeout), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        client: Client | None = None
        while True:
            item = self._queue.get()
            if item is None:
                break
            topic, event, when = item
            for attempt in range(ATTEMPTS):
                try:
                    if self.ttrpc_address:
                        client = self._send_ttrpc(client, topic, event, when)
                    else:
                        self._send_binary(topic, event)
                    break
                except (OSError, RuntimeError) as error:
                    if client is not None:
                        client.close()
                        client = None
                    if attempt == ATTEMPTS - 1:
                        self.log(f"publish {topic}: {error}")
                    else:
                        time.sleep(0.1 * 2**attempt)
        if client is not None:
            client.close()

    def _send_ttrpc(self, client: Client | None, topic: str, event: bytes, when: int) -> Client:
        from inclavare.shim.ttrpc_server import Client, RpcError

        if client is None:
            client = Client(self.ttrpc_address)
        request = forward_request(self.namespace, topic, event, when)
        try:
            client.call(EVENTS_SERVICE, "Forward", request)
        except RpcError as error:
            raise RuntimeError(error.message) from None
        return client

    def _send_binary(self, topic: str, event: bytes) -> None:
        from inclavare.shim.runtime import run_program

        command = [self.publish_binary, "--address", self.address, "publish", "--topic", topic]
        command += ["--namespace", self.namespace]
        code, output = run_program(self.reaper, command, stdin_data=event, with_errors=True)
        if code != 0:
            raise RuntimeError(output.decode(errors="replace").strip() or f"exit status {code}")
