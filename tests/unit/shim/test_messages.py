"""The hand-encoded messages against protoc's classes generated from the project's .proto
files: every message, random values, both directions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.shim import messages
from inclavare.shim.ttrpc import DecodeError


def _generated(cls: type[messages.Message]) -> Any:
    from inclavare.shim.proto import events_pb2, runc_options_pb2, shim_pb2, task_pb2

    special = {
        messages.RuncOptions: runc_options_pb2.Options,
        messages.ProcessDetails: runc_options_pb2.ProcessDetails,
        messages.ProcessInfo: task_pb2.ProcessInfo,
    }
    if cls in special:
        return special[cls]
    if cls is messages.Timestamp:
        from google.protobuf import timestamp_pb2

        return timestamp_pb2.Timestamp
    if cls is messages.AnyMessage:
        from google.protobuf import any_pb2

        return any_pb2.Any
    if cls is messages.Mount:
        from inclavare.shim.proto import mount_pb2

        return mount_pb2.Mount
    for module in (shim_pb2, events_pb2):
        if hasattr(module, cls.__name__):
            return getattr(module, cls.__name__)
    raise AssertionError(f"no generated class for {cls.__name__}")


SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=20),
    "bytes": st.binary(max_size=20),
    "bool": st.booleans(),
    "uint32": st.integers(0, 2**32 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "int32": st.integers(0, 999_999_999),  # Timestamp.nanos
    "int64": st.integers(-(2**40), 2**40),
    "enum": st.integers(0, 5),
    "repeated string": st.lists(st.text(max_size=10), max_size=3),
}


def values_of(cls: type[messages.Message], depth: int = 0) -> st.SearchStrategy[Any]:
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for name, _, kind in cls.FIELDS:
        if isinstance(kind, tuple):
            parts[name] = st.lists(values_of(kind[1], depth + 1), max_size=2)
        elif isinstance(kind, str):
            parts[name] = SCALARS[kind]
        else:
            parts[name] = values_of(kind, depth + 1)
    return st.fixed_dictionaries(parts)


def build(cls: type[messages.Message], values: dict[str, Any]) -> messages.Message:
    built = {}
    for name, _, kind in cls.FIELDS:
        value = values[name]
        if isinstance(kind, tuple):
            value = [build(kind[1], item) for item in value]
        elif not isinstance(kind, str):
            value = build(kind, value)
        built[name] = value
    return cls(**built)


def fill(target: Any, cls: type[messages.Message], values: dict[str, Any]) -> None:
    for name, _, kind in cls.FIELDS:
        value = values[name]
        if isinstance(kind, tuple):
            for item in value:
                fill(getattr(target, name).add(), kind[1], item)
        elif kind == "repeated string":
            getattr(target, name).extend(value)
        elif isinstance(kind, str):
            setattr(target, name, value)
        elif any(value.values()):
            fill(getattr(target, name), kind, value)


ALL = sorted(
    {
        cls
        for cls in vars(messages).values()
        if isinstance(cls, type)
        and issubclass(cls, messages.Message)
        and cls.FIELDS
        and cls
        not in (
            messages.PidResponse,
            messages.ProcessRequest,
            messages.ContainerRequest,
            messages.ContainerEvent,
        )
    },
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_both_directions_agree_with_protoc(
    cls: type[messages.Message], data: st.DataObject
) -> None:
    values = data.draw(values_of(cls))
    ours = build(cls, values)
    theirs = _generated(cls)()
    fill(theirs, cls, values)
    assert type(theirs).FromString(ours.SerializeToString()) == theirs
    assert cls.FromString(theirs.SerializeToString()) == ours


def test_malformed_input_is_a_decode_error() -> None:
    for data, reason in (
        (b"\x0a\x05ab", "truncated"),
        (b"\x08\x01", "id: wrong wire type"),
        (b"\x0a\x02\xff\xfe", "invalid UTF-8"),
        (b"\x1a\x01\x08", "truncated"),  # a Mount whose varint is cut
    ):
        with pytest.raises(DecodeError, match=reason):
            messages.CreateTaskRequest.FromString(data)


def test_timestamps_keep_the_epoch() -> None:
    response = messages.WaitResponse(exit_status=1, exited_at=messages.Timestamp.at(0))
    assert response.SerializeToString() == b"\x08\x01\x12\x00"
    assert messages.Timestamp.at(1_500_000_000_250).nanoseconds() == 1_500_000_000_250
