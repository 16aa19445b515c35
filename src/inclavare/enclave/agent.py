"""The agent protocol: how rune talks to the init-runelet of an enclave container. Sans-IO.

The init-runelet listens on `agent.sock` in the container's state directory (a Unix stream
socket, mode 0600). This module only turns messages into bytes and bytes into messages and
checks that each side says what the conversation allows; the caller moves the bytes and the
file descriptors.

Framing: each message is a 4-byte big-endian length, then that many bytes of one UTF-8 JSON
object whose "type" names the message. A message announcing descriptors ("fds": n) is sent
with n descriptors as SCM_RIGHTS ancillary data on the same sendmsg(2); the receiver hands
every descriptor it gets to `receive_data` along with the bytes, and the message claims the
first n that are waiting. Messages are at most 1 MiB.

Messages (C = rune, the client; A = the agent):

    C  exec     argv (list of str), env (list of "NAME=value"), cwd (str), fds: 3
                stdin, stdout and stderr of the process ride with it
    A  started  pid: the process id the enclave runtime gave the process
    C  signal   signal (int): for the process this connection started
    A  exit     code: its exit status, 128 + N when signal N ended it
    C  report   target_info (hex, 512 bytes), report_data (hex, at most 64 bytes)
    A  report   report (hex, a 432-byte SGX report)
    C  info     (nothing)
    A  info     enclave: an object describing the enclave (type, runtime, identity)
    A  error    message: one line; answers any request that failed

The conversation of one connection:

    idle      --C exec-->  starting  --A started-->  running  --A exit-->  finished
                           starting  --A error-->    idle
    idle      --C report or info-->  answering  --A report, info or error-->  idle
    running   --C signal-->  running    (a failed signal is answered with A error)

Arguments and environment travel as arrays, so an argument may hold spaces, quotes or
newlines. Anything out of turn or malformed raises AgentProtocolError; the connection is
then unusable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from inclavare.errors import InclavareError

MAX_MESSAGE = 1 << 20
HEADER_SIZE = 4
SOCKET_NAME = "agent.sock"
CLIENT = "client"
AGENT = "agent"

# Conversation states
IDLE = "idle"
STARTING = "starting"
RUNNING = "running"
ANSWERING = "answering"
FINISHED = "finished"


class AgentProtocolError(InclavareError):
    """The peer broke the agent protocol (or we were about to)."""


# --- messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exec:
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    fds: tuple[int, int, int] | tuple[()] = field(default=(), compare=False)  # stdin, out, err
    type = "exec"


@dataclass(frozen=True)
class Started:
    pid: int
    type = "started"


@dataclass(frozen=True)
class Signal:
    signal: int
    type = "signal"


@dataclass(frozen=True)
class Exited:
    code: int
    type = "exit"


@dataclass(frozen=True)
class ReportRequest:
    target_info: bytes
    report_data: bytes = b""
    type = "report"


@dataclass(frozen=True)
class Report:
    report: bytes
    type = "report"


@dataclass(frozen=True)
class InfoRequest:
    type = "info"


@dataclass(frozen=True)
class Info:
    enclave: dict[str, object]
    type = "info"


@dataclass(frozen=True)
class Error:
    message: str
    type = "error"


Message = Exec | Started | Signal | Exited | ReportRequest | Report | InfoRequest | Info | Error

# (who sends it, its type) -> (states it may be sent in, state afterwards)
_TRANSITIONS: dict[tuple[str, str], tuple[tuple[str, ...], str | None]] = {
    (CLIENT, "exec"): ((IDLE,), STARTING),
    (CLIENT, "signal"): ((RUNNING,), RUNNING),
    (CLIENT, "report"): ((IDLE,), ANSWERING),
    (CLIENT, "info"): ((IDLE,), ANSWERING),
    (AGENT, "started"): ((STARTING,), RUNNING),
    (AGENT, "exit"): ((RUNNING,), FINISHED),
    (AGENT, "report"): ((ANSWERING,), IDLE),
    (AGENT, "info"): ((ANSWERING,), IDLE),
    # An error answers the pending request; while running it answers a signal.
    (AGENT, "error"): ((STARTING, ANSWERING, RUNNING), None),
}


def _payload(message: Message) -> dict[str, object]:
    if isinstance(message, Exec):
        return {"argv": list(message.argv), "env": list(message.env), "cwd": message.cwd}
    if isinstance(message, Started):
        return {"pid": message.pid}
    if isinstance(message, Signal):
        return {"signal": message.signal}
    if isinstance(message, Exited):
        return {"code": message.code}
    if isinstance(message, ReportRequest):
        return {"target_info": message.target_info.hex(), "report_data": message.report_data.hex()}
    if isinstance(message, Report):
        return {"report": message.report.hex()}
    if isinstance(message, Info):
        return {"enclave": message.enclave}
    if isinstance(message, Error):
        return {"message": message.message}
    return {}


def _strings(document: dict[str, object], key: str) -> tuple[str, ...]:
    value = document.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AgentProtocolError(f"{document['type']} message: {key} must be a list of strings")
    if any("\0" in item for item in value):
        raise AgentProtocolError(f"{document['type']} message: {key} holds a NUL character")
    return tuple(value)


def _integer(document: dict[str, object], key: str) -> int:
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AgentProtocolError(f"{document['type']} message: {key} must be an integer")
    return value


def _hex(document: dict[str, object], key: str, sizes: range) -> bytes:
    value = document.get(key, "")
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) not in sizes:
        raise AgentProtocolError(
            f"{document['type']} message: {key} must be hex of {sizes.start} to "
            f"{sizes.stop - 1} bytes"
        )
    return raw


def _decode(sender: str, document: dict[str, object], fds: list[int]) -> Message:
    kind = document.get("type")
    if sender == CLIENT and kind == "exec":
        argv = _strings(document, "argv")
        if not argv:
            raise AgentProtocolError("exec message: argv is empty")
        cwd = document.get("cwd", "/")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise AgentProtocolError("exec message: cwd must be an absolute path")
        stdio = (fds[0], fds[1], fds[2]) if len(fds) == 3 else ()
        return Exec(argv, _strings(document, "env"), cwd, stdio)
    if sender == CLIENT and kind == "signal":
        number = _integer(document, "signal")
        if not 0 < number < 65:
            raise AgentProtocolError(f"signal message: no signal {number}")
        return Signal(number)
    if sender == CLIENT and kind == "report":
        return ReportRequest(
            _hex(document, "target_info", range(512, 513)),
            _hex(document, "report_data", range(0, 65)),
        )
    if sender == CLIENT and kind == "info":
        return InfoRequest()
    if sender == AGENT and kind == "started":
        return Started(_integer(document, "pid"))
    if sender == AGENT and kind == "exit":
        return Exited(_integer(document, "code"))
    if sender == AGENT and kind == "report":
        return Report(_hex(document, "report", range(432, 433)))
    if sender == AGENT and kind == "info":
        enclave = document.get("enclave")
        if not isinstance(enclave, dict):
            raise AgentProtocolError("info message: enclave must be an object")
        return Info(enclave)
    if sender == AGENT and kind == "error":
        message = document.get("message")
        if not isinstance(message, str):
            raise AgentProtocolError("error message: message must be a string")
        return Error(message)
    raise AgentProtocolError(f"the {sender} may not send a message of type {kind!r}")


# --- the connection -------------------------------------------------------------------------


class Connection:
    """One side (`CLIENT` or `AGENT`) of one connection to the agent socket.

    `send(message)` returns the bytes to write (with `message.fds` as SCM_RIGHTS for an
    Exec); `receive_data(data, fds)` takes what the socket gave and returns the complete
    messages. Descriptors received and not (yet) claimed by a message stay in `pending_fds`;
    the caller closes them when it drops the connection.
    """

    def __init__(self, role: str) -> None:
        if role not in (CLIENT, AGENT):
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self.peer = AGENT if role == CLIENT else CLIENT
        self.state = IDLE
        self._buffer = bytearray()
        self.pending_fds: list[int] = []
        self.closed = False

    def _advance(self, sender: str, kind: str) -> None:
        allowed, after = _TRANSITIONS.get((sender, kind), ((), None))
        if self.state not in allowed:
            raise AgentProtocolError(
                f"the {sender} may not send {kind!r} while the conversation is {self.state}"
            )
        if after is not None:
            self.state = after
        elif self.state != RUNNING:  # an error ends a request; a running process goes on
            self.state = IDLE

    def send(self, message: Message) -> bytes:
        self._advance(self.role, message.type)
        document: dict[str, object] = {"type": message.type, **_payload(message)}
        if isinstance(message, Exec):
            if len(message.fds) != 3:
                raise AgentProtocolError("exec message: give exactly 3 descriptors")
            document["fds"] = 3
        body = json.dumps(document, separators=(",", ":")).encode()
        if len(body) > MAX_MESSAGE:
            raise AgentProtocolError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
        return len(body).to_bytes(HEADER_SIZE, "big") + body

    def receive_data(self, data: bytes, fds: Sequence[int] = ()) -> list[Message]:
        """Feed bytes (b"" at end of file) and descriptors; return the complete messages."""
        self.pending_fds.extend(fds)
        if not data:
            if self._buffer:
                raise AgentProtocolError("the connection closed in the middle of a message")
            self.closed = True
            return []
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= HEADER_SIZE:
            size = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
            if size > MAX_MESSAGE:
                raise AgentProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE}")
            if len(self._buffer) < HEADER_SIZE + size:
                break
            body = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + size])
            del self._buffer[: HEADER_SIZE + size]
            messages.append(self._parse(body))
        return messages

    def _parse(self, body: bytes) -> Message:
        try:
            document = json.loads(body)
        except ValueError as error:
            raise AgentProtocolError(f"a message is not JSON: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("type"), str):
            raise AgentProtocolError("a message must be a JSON object with a type")
        claimed: list[int] = []
        wanted = document.get("fds", 0)
        if wanted:
            if wanted != 3 or document["type"] != "exec":
                raise AgentProtocolError("only an exec message carries descriptors, 3 of them")
            if len(self.pending_fds) < 3:
                raise AgentProtocolError("an exec message arrived without its 3 descriptors")
            claimed, self.pending_fds = self.pending_fds[:3], self.pending_fds[3:]
        elif document["type"] == "exec":
            raise AgentProtocolError("exec message: fds must be 3")
        try:
            message = _decode(self.peer, document, claimed)
            self._advance(self.peer, message.type)
        except AgentProtocolError:
            self.pending_fds[:0] = claimed  # the caller closes them with the connection
            raise
        return message
