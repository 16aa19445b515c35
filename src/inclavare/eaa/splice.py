"""Copying bytes between two sockets inside the kernel: splice(2) through a pipe per
direction, driven by the asyncio loop's readiness callbacks.

inclavared's tunnel relays ciphertext it never reads; with splice the bytes do not even
enter the process, so relaying costs a few system calls per chunk rather than two copies
and Python's work per chunk. Each direction is a `_Pump` driven by callbacks, not a
coroutine: the source stays registered with the loop while data flows, and the pump waits
for the sink only when the sink's buffer is full.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
from collections import Counter

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


async def relay(
    first: socket.socket, second: socket.socket, counters: Counter[str], names: tuple[str, str]
) -> None:
    """Copy both ways until both directions have ended (an end of stream is passed on as a
    shutdown of writing), or until either fails; then stop the other."""
    for sock in (first, second):
        sock.setblocking(False)
    loop = asyncio.get_running_loop()
    pumps = [
        _Pump(loop, first, second, counters, names[0]),
        _Pump(loop, second, first, counters, names[1]),
    ]
    try:
        for pump in pumps:
            pump.start()
        done, _ = await asyncio.wait(
            [pump.finished for pump in pumps], return_when=asyncio.FIRST_EXCEPTION
        )
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
    finally:
        for pump in pumps:
            pump.stop()


class _Pump:
    """One direction: source socket -> pipe -> sink socket."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: socket.socket,
        sink: socket.socket,
        counters: Counter[str],
        name: str,
    ) -> None:
        self.loop = loop
        self.source = source.fileno()
        self.sink = sink
        self.counters = counters
        self.name = name
        self.finished: asyncio.Future[None] = loop.create_future()
        self.pipe_read, self.pipe_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:  # a larger pipe moves more per wake-up (the default holds 64 KiB)
            fcntl.fcntl(self.pipe_write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: keep the default
        self.buffered = 0  # bytes in the pipe, not yet in the sink
        self.reading = self.writing = False

    def start(self) -> None:
        self._want_read(True)

    def stop(self) -> None:
        self._want_read(False)
        self._want_write(False)
        if self.pipe_read >= 0:
            os.close(self.pipe_read)
            os.close(self.pipe_write)
            self.pipe_read = self.pipe_write = -1
        if not self.finished.done():
            self.finished.cancel()

    def _want_read(self, wanted: bool) -> None:
        if wanted and not self.reading:
            self.loop.add_reader(self.source, self._readable)
        elif not wanted and self.reading:
            self.loop.remove_reader(self.source)
        self.reading = wanted

    def _want_write(self, wanted: bool) -> None:
        if wanted and not self.writing:
            self.loop.add_writer(self.sink.fileno(), self._writable)
        elif not wanted and self.writing:
            self.loop.remove_writer(self.sink.fileno())
        self.writing = wanted

    def _readable(self) -> None:
        # Called only with the pipe empty: reading stops while the sink is behind.
        try:
            moved = os.splice(self.source, self.pipe_write, CHUNK, flags=FLAGS)
        except BlockingIOError:
            return
        except OSError as error:
            self._fail(error)
            return
        if moved == 0:  # end of stream
            self._want_read(False)
            self._end()
            return
        self.buffered = moved
        self._writable()

    def _writable(self) -> None:
        while self.buffered:
            try:
                sent = os.splice(self.pipe_read, self.sink.fileno(), self.buffered, flags=FLAGS)
            except BlockingIOError:  # the sink is full: wait for it, not for the source
                self._want_read(False)
                self._want_write(True)
                return
            except OSError as error:
                self._fail(error)
                return
            self.buffered -= sent
            self.counters[self.name] += sent
        self._want_write(False)
        self._want_read(True)

    def _end(self) -> None:
        try:
            self.sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if not self.finished.done():
            self.finished.set_result(None)

    def _fail(self, error: OSError) -> None:
        self._want_read(False)
        self._want_write(False)
        if not self.finished.done():
            self.finished.set_exception(error)
