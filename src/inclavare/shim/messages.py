"""The Task service's messages and containerd's task events, encoded and decoded here.

The .proto files in proto/ are the definitions; protoc's modules generated from them are
what the unit tests check these classes against, field by field, and what the rarely used
cgroup metrics are built with. The messages on the path of every container are encoded
here because importing the protobuf runtime and building its descriptors costs a shim tens
of milliseconds before it can answer containerd's first call.

Each class lists its fields as (name, number, kind): kinds are the proto3 scalar types,
"repeated string", a message class, or ("repeated", message class). Decoding skips unknown
fields and refuses a known field of the wrong wire type; encoding leaves out default values,
as protobuf does.
"""

from __future__ import annotations

from inclavare.shim.ttrpc import DecodeError, bytes_field, fields, varint_field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self

_SCALARS = {
    "string": "",
    "bytes": b"",
    "bool": False,
    "uint32": 0,
    "uint64": 0,
    "int32": 0,
    "int64": 0,
    "enum": 0,
    "repeated string": None,  # a new list per instance
}


class Message:
    FIELDS: ClassVar[tuple[tuple[str, int, Any], ...]] = ()

    def __init__(self, **values: Any) -> None:
        for name, _, kind in self.FIELDS:
            if kind == "repeated string" or isinstance(kind, tuple):
                setattr(self, name, [])
            elif isinstance(kind, str):
                setattr(self, name, _SCALARS[kind])
            else:
                setattr(self, name, kind())
        for name, value in values.items():
            if not any(name == known for known, _, _ in self.FIELDS):
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name, _, _ in self.FIELDS
        )

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name, _, _ in self.FIELDS)
        return f"{type(self).__name__}({values})"

    # the names protobuf's generated classes use, so that either can be used alike
    def SerializeToString(self) -> bytes:
        out = bytearray()
        for name, number, kind in self.FIELDS:
            value = getattr(self, name)
            if isinstance(kind, tuple):
                for item in value:
                    out += bytes_field(number, item.SerializeToString())
            elif kind == "repeated string":
                for item in value:
                    out += bytes_field(number, item.encode())
            elif kind == "string":
                if value:
                    out += bytes_field(number, value.encode())
            elif kind == "bytes":
                if value:
                    out += bytes_field(number, value)
            elif isinstance(kind, str):
                if value:
                    out += varint_field(number, int(value))
            else:
                encoded = value.SerializeToString()
                if encoded or value.present:
                    out += bytes_field(number, encoded)
        return bytes(out)

    @classmethod
    def FromString(cls, data: bytes) -> Self:
        message = cls()
        message.present = True
        by_number = {number: (name, kind) for name, number, kind in cls.FIELDS}
        for number, wire_type, value in fields(data):
            known = by_number.get(number)
            if known is None:
                continue
            name, kind = known
            if isinstance(kind, tuple):
                getattr(message, name).append(kind[1].FromString(_blob(value, name)))
            elif kind == "repeated string":
                getattr(message, name).append(_text(value, name))
            elif kind == "string":
                setattr(message, name, _text(value, name))
            elif kind == "bytes":
                setattr(message, name, _blob(value, name))
            elif isinstance(kind, str):
                setattr(message, name, _number(value, wire_type, kind, name))
            else:
                setattr(message, name, kind.FromString(_blob(value, name)))
        return message

    # an explicitly set but empty sub-message is still written (a Timestamp of the epoch)
    present = False

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


def _blob(value: int | bytes, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"{name}: wrong wire type")
    return value


def _text(value: int | bytes, name: str) -> str:
    try:
        return _blob(value, name).decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{name}: invalid UTF-8") from None


def _number(value: int | bytes, wire_type: int, kind: str, name: str) -> int | bool:
    if wire_type != 0 or not isinstance(value, int):
        raise DecodeError(f"{name}: wrong wire type {wire_type}")
    if kind == "bool":
        return value != 0
    if kind in ("uint32", "enum", "int32"):
        value &= 0xFFFFFFFF
        if kind != "uint32" and value & 0x80000000:
            value -= 1 << 32
        return value
    if kind == "int64" and value & (1 << 63):
        return value - (1 << 64)
    return value


# --- well-known types -------------------------------------------------------------------------


class Timestamp(Message):
    FIELDS = (("seconds", 1, "int64"), ("nanos", 2, "int32"))

    seconds: int
    nanos: int

    @classmethod
    def at(cls, nanoseconds: int) -> Timestamp:
        seconds, nanos = divmod(nanoseconds, 1_000_000_000)
        stamp = cls(seconds=seconds, nanos=nanos)
        stamp.present = True
        return stamp

    def nanoseconds(self) -> int:
        return self.seconds * 1_000_000_000 + self.nanos


class AnyMessage(Message):
    """google.protobuf.Any."""

    FIELDS = (("type_url", 1, "string"), ("value", 2, "bytes"))

    type_url: str
    value: bytes


# --- containerd.types, containerd.v1.types, containerd.runc.v1 -------------------------------


class Mount(Message):
    FIELDS = (
        ("type", 1, "string"),
        ("source", 2, "string"),
        ("target", 3, "string"),
        ("options", 4, "repeated string"),
    )

    type: str
    source: str
    target: str
    options: list[str]


class ProcessInfo(Message):
    FIELDS = (("pid", 1, "uint32"), ("info", 2, AnyMessage))

    pid: int
    info: AnyMessage


class RuncOptions(Message):
    """containerd.runc.v1.Options (the fields the shim reads)."""

    FIELDS = (
        ("no_pivot_root", 1, "bool"),
        ("no_new_keyring", 2, "bool"),
        ("shim_cgroup", 3, "string"),
        ("io_uid", 4, "uint32"),
        ("io_gid", 5, "uint32"),
        ("binary_name", 6, "string"),
        ("root", 7, "string"),
        ("systemd_cgroup", 9, "bool"),
    )

    no_pivot_root: bool
    no_new_keyring: bool
    binary_name: str
    root: str


class ProcessDetails(Message):
    FIELDS = (("exec_id", 1, "string"),)

    exec_id: str


# --- containerd.task.v2 -----------------------------------------------------------------------

_ID = ("id", 1, "string")
_EXEC_ID = ("exec_id", 2, "string")


class CreateTaskRequest(Message):
    FIELDS = (
        _ID,
        ("bundle", 2, "string"),
        ("rootfs", 3, ("repeated", Mount)),
        ("terminal", 4, "bool"),
        ("stdin", 5, "string"),
        ("stdout", 6, "string"),
        ("stderr", 7, "string"),
        ("checkpoint", 8, "string"),
        ("parent_checkpoint", 9, "string"),
        ("options", 10, AnyMessage),
    )

    id: str
    bundle: str
    rootfs: list[Mount]
    terminal: bool
    stdin: str
    stdout: str
    stderr: str
    checkpoint: str
    parent_checkpoint: str
    options: AnyMessage


class PidResponse(Message):
    FIELDS = (("pid", 1, "uint32"),)

    pid: int


class CreateTaskResponse(PidResponse):
    pass


class StartResponse(PidResponse):
    pass


class ProcessRequest(Message):
    """The requests that name a container and, optionally, one of its execs."""

    FIELDS = (_ID, _EXEC_ID)

    id: str
    exec_id: str


class StartRequest(ProcessRequest):
    pass


class DeleteRequest(ProcessRequest):
    pass


class StateRequest(ProcessRequest):
    pass


class WaitRequest(ProcessRequest):
    pass


class ContainerRequest(Message):
    FIELDS = (_ID,)

    id: str


class PidsRequest(ContainerRequest):
    pass


class StatsRequest(ContainerRequest):
    pass


class ConnectRequest(ContainerRequest):
    pass


class PauseRequest(ContainerRequest):
    pass


class ResumeRequest(ContainerRequest):
    pass


class DeleteResponse(Message):
    FIELDS = (("pid", 1, "uint32"), ("exit_status", 2, "uint32"), ("exited_at", 3, Timestamp))

    pid: int
    exit_status: int
    exited_at: Timestamp


class ExecProcessRequest(Message):
    FIELDS = (
        _ID,
        _EXEC_ID,
        ("terminal", 3, "bool"),
        ("stdin", 4, "string"),
        ("stdout", 5, "string"),
        ("stderr", 6, "string"),
        ("spec", 7, AnyMessage),
    )

    id: str
    exec_id: str
    terminal: bool
    stdin: str
    stdout: str
    stderr: str
    spec: AnyMessage


class ResizePtyRequest(Message):
    FIELDS = (_ID, _EXEC_ID, ("width", 3, "uint32"), ("height", 4, "uint32"))

    id: str
    exec_id: str
    width: int
    height: int


class StateResponse(Message):
    FIELDS = (
        ("id", 1, "string"),
        ("bundle", 2, "string"),
        ("pid", 3, "uint32"),
        ("status", 4, "enum"),
        ("stdin", 5, "string"),
        ("stdout", 6, "string"),
        ("stderr", 7, "string"),
        ("terminal", 8, "bool"),
        ("exit_status", 9, "uint32"),
        ("exited_at", 10, Timestamp),
        ("exec_id", 11, "string"),
    )

    id: str
    bundle: str
    pid: int
    status: int
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    exit_status: int
    exited_at: Timestamp
    exec_id: str


class KillRequest(Message):
    FIELDS = (_ID, _EXEC_ID, ("signal", 3, "uint32"), ("all", 4, "bool"))

    id: str
    exec_id: str
    signal: int
    all: bool


class CloseIORequest(Message):
    FIELDS = (_ID, _EXEC_ID, ("stdin", 3, "bool"))

    id: str
    exec_id: str
    stdin: bool


class PidsResponse(Message):
    FIELDS = (("processes", 1, ("repeated", ProcessInfo)),)

    processes: list[ProcessInfo]


class UpdateTaskRequest(Message):
    FIELDS = (_ID, ("resources", 2, AnyMessage))

    id: str
    resources: AnyMessage


class WaitResponse(Message):
    FIELDS = (("exit_status", 1, "uint32"), ("exited_at", 2, Timestamp))

    exit_status: int
    exited_at: Timestamp


class StatsResponse(Message):
    FIELDS = (("stats", 1, AnyMessage),)

    stats: AnyMessage


class ConnectResponse(Message):
    FIELDS = (("shim_pid", 1, "uint32"), ("task_pid", 2, "uint32"), ("version", 3, "string"))

    shim_pid: int
    task_pid: int
    version: str


class ShutdownRequest(Message):
    FIELDS = (_ID, ("now", 2, "bool"))

    id: str
    now: bool


# --- containerd.events ------------------------------------------------------------------------


class TaskIO(Message):
    FIELDS = (
        ("stdin", 1, "string"),
        ("stdout", 2, "string"),
        ("stderr", 3, "string"),
        ("terminal", 4, "bool"),
    )


class TaskCreate(Message):
    FIELDS = (
        ("container_id", 1, "string"),
        ("bundle", 2, "string"),
        ("rootfs", 3, ("repeated", Mount)),
        ("io", 4, TaskIO),
        ("checkpoint", 5, "string"),
        ("pid", 6, "uint32"),
    )


class TaskStart(Message):
    FIELDS = (("container_id", 1, "string"), ("pid", 2, "uint32"))


class TaskDelete(Message):
    FIELDS = (
        ("container_id", 1, "string"),
        ("pid", 2, "uint32"),
        ("exit_status", 3, "uint32"),
        ("exited_at", 4, Timestamp),
        ("id", 5, "string"),
    )


class TaskExit(Message):
    FIELDS = (
        ("container_id", 1, "string"),
        ("id", 2, "string"),
        ("pid", 3, "uint32"),
        ("exit_status", 4, "uint32"),
        ("exited_at", 5, Timestamp),
    )


class ContainerEvent(Message):
    FIELDS = (("container_id", 1, "string"),)


class TaskOOM(ContainerEvent):
    pass


class TaskPaused(ContainerEvent):
    pass


class TaskResumed(ContainerEvent):
    pass


class TaskExecAdded(Message):
    FIELDS = (("container_id", 1, "string"), ("exec_id", 2, "string"))


class TaskExecStarted(Message):
    FIELDS = (("container_id", 1, "string"), ("exec_id", 2, "string"), ("pid", 3, "uint32"))


# the event classes by name, for publishing (their type URL is containerd.events.<name>)
EVENTS = {
    cls.__name__: cls
    for cls in (
        TaskCreate,
        TaskStart,
        TaskDelete,
        TaskExit,
        TaskOOM,
        TaskPaused,
        TaskResumed,
        TaskExecAdded,
        TaskExecStarted,
    )
}
