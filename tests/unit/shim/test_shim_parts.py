"""The shim's pure parts: socket naming, grouping, hand-encoded messages, mount options,
metrics conversion, runtime options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inclavare.linux.constants import MS_BIND, MS_NOSUID, MS_RDONLY, MS_REC
from inclavare.shim.cleanup import delete_response
from inclavare.shim.daemon import group_id, socket_path
from inclavare.shim.events import any_bytes, forward_request
from inclavare.shim.metrics import metrics_v1
from inclavare.shim.mounts import parse_options
from inclavare.shim.runtime import last_error
from inclavare.shim.service import runtime_options


def test_socket_path_is_containerds_hash() -> None:
    expected = hashlib.sha256(b"/run/containerd/containerd.sock/k8s.io/pod1").hexdigest()
    assert socket_path("/run/containerd/containerd.sock", "k8s.io", "pod1") == (
        f"/run/containerd/s/{expected}"
    )


def test_group_is_the_sandbox_of_a_cri_container(tmp_path: Path) -> None:
    assert group_id(str(tmp_path), "c1") == "c1"  # no config.json
    (tmp_path / "config.json").write_text(
        json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod"}})
    )
    assert group_id(str(tmp_path), "c1") == "pod"
    (tmp_path / "config.json").write_text("{not json")
    assert group_id(str(tmp_path), "c1") == "c1"


@given(st.integers(0, 255), st.integers(0, 2**33 * 10**9))
def test_delete_response_matches_protobuf(status: int, when: int) -> None:
    from inclavare.shim.proto import shim_pb2

    expected = shim_pb2.DeleteResponse(exit_status=status)
    expected.exited_at.FromNanoseconds(when)
    parsed = shim_pb2.DeleteResponse.FromString(delete_response(status, when))
    assert parsed == expected


def test_forward_request_carries_the_envelope() -> None:
    from google.protobuf import any_pb2, timestamp_pb2

    from inclavare.shim.proto import events_pb2

    exit_event = events_pb2.TaskExit(container_id="c", id="c", pid=7, exit_status=3)
    event = any_bytes("containerd.events.TaskExit", exit_event.SerializeToString())
    data = forward_request("ns", "/tasks/exit", event, 1700000000_250000000)
    # ForwardRequest{1: Envelope{1: Timestamp, 2: namespace, 3: topic, 4: Any}}
    from inclavare.shim import ttrpc

    ((number, _, envelope),) = ttrpc.fields(data)
    assert number == 1 and isinstance(envelope, bytes)
    parts = {n: v for n, _, v in ttrpc.fields(envelope)}
    stamp = timestamp_pb2.Timestamp.FromString(parts[1])
    assert stamp.seconds == 1700000000 and stamp.nanos == 250000000
    assert parts[2] == b"ns" and parts[3] == b"/tasks/exit"
    packed = any_pb2.Any.FromString(parts[4])
    assert packed.type_url == "containerd.events.TaskExit"
    assert events_pb2.TaskExit.FromString(packed.value) == exit_event


@pytest.mark.parametrize(
    ("options", "flags", "data"),
    [
        (["rbind", "ro"], MS_BIND | MS_REC | MS_RDONLY, ""),
        (["bind", "ro", "rw", "nosuid"], MS_BIND | MS_NOSUID, ""),
        (
            ["index=off", "lowerdir=/a:/b", "upperdir=/u", "workdir=/w"],
            0,
            "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w",
        ),
    ],
)
def test_mount_options(options: list[str], flags: int, data: str) -> None:
    assert parse_options(options) == (flags, data)


def test_metrics_from_runc_stats() -> None:
    from inclavare.shim.proto import cgroups_metrics_pb2

    data = {
        "cpu": {"usage": {"total": 10, "percpu": [4, 6], "kernel": 2, "user": 8}},
        "memory": {
            "usage": {"limit": 50331648, "usage": 4096, "max": 8192, "failcnt": 1},
            "raw": {"rss": 100, "pgfault": 5, "total_cache": 7},
            "cache": 3,
        },
        "pids": {"current": 2, "limit": 10},
        "blkio": {"ioServiceBytesRecursive": [{"major": 8, "minor": 0, "op": "Read", "value": 9}]},
        "hugetlb": {"2MB": {"usage": 1, "max": 2, "failcnt": 0}},
    }
    metrics = cgroups_metrics_pb2.Metrics.FromString(metrics_v1(data))
    assert metrics.pids.current == 2 and metrics.pids.limit == 10
    assert list(metrics.cpu.usage.per_cpu) == [4, 6] and metrics.cpu.usage.total == 10
    assert metrics.memory.usage.limit == 50331648 and metrics.memory.usage.max == 8192
    assert metrics.memory.rss == 100 and metrics.memory.pg_fault == 5
    assert metrics.memory.cache == 3 and metrics.memory.total_cache == 7
    assert metrics.blkio.io_service_bytes_recursive[0].value == 9
    assert metrics.hugetlb[0].pagesize == "2MB"
    assert cgroups_metrics_pb2.Metrics.FromString(metrics_v1({})).pids.current == 0


def test_runtime_options_honour_binary_name() -> None:
    from inclavare.shim.proto import runc_options_pb2

    value = runc_options_pb2.Options(binary_name="/opt/rune", root="/r").SerializeToString()
    found = runtime_options("containerd.runc.v1.Options", value)
    assert found["binary_name"] == "/opt/rune" and found["root"] == "/r"
    assert runtime_options("other.Options", value) == {}
    assert runtime_options("", b"") == {}


def test_runtime_options_of_the_cri_plugin_name_a_toml_file(tmp_path: Path) -> None:
    from inclavare.shim import ttrpc
    from inclavare.shim.ttrpc_server import RpcError

    config = tmp_path / "rune.toml"
    config.write_text('BinaryName = "/opt/bin/rune"\nRoot = "/run/r"\nNoPivotRoot = true\n')
    value = ttrpc.bytes_field(1, b"x") + ttrpc.bytes_field(2, str(config).encode())
    assert runtime_options("runtimeoptions.v1.Options", value) == {
        "binary_name": "/opt/bin/rune",
        "root": "/run/r",
        "no_pivot_root": True,
    }
    config.write_text("BinaryName = 3\n")
    with pytest.raises(RpcError, match="BinaryName must be a str"):
        runtime_options("runtimeoptions.v1.Options", value)
    config.write_text("BinaryName = \n")
    with pytest.raises(RpcError, match=r"rune\.toml"):
        runtime_options("runtimeoptions.v1.Options", value)
    missing = ttrpc.bytes_field(2, str(tmp_path / "missing.toml").encode())
    with pytest.raises(RpcError, match="No such file"):
        runtime_options("runtimeoptions.v1.Options", missing)


def test_last_error_of_a_json_log(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text(
        '{"level":"error","msg":"first"}\nnot json\n{"level":"error","msg":"second"}\n'
        '{"level":"info","msg":"later"}\n'
    )
    assert last_error(str(log)) == "second"
    assert last_error(str(tmp_path / "missing")) == ""


def test_the_memory_cgroup_of_this_process() -> None:
    import os

    from inclavare.shim.oom import memory_cgroup

    found = memory_cgroup(os.getpid())
    assert found is None or os.path.isfile(os.path.join(found, "memory.oom_control"))
    assert memory_cgroup(2**22 + 1) is None  # no such process


def test_the_carrier_is_asked_for_in_the_process_environment() -> None:
    from inclavare.shim import carrier

    assert carrier.requested({"process": {"env": ["PATH=/bin", "RUNE_CARRIER=wasm"]}}) == "wasm"
    assert carrier.requested({"process": {"env": ["PATH=/bin"]}}) is None
    assert carrier.requested({"process": {"env": "RUNE_CARRIER=wasm"}}) is None
    assert carrier.requested({}) is None


def test_an_unknown_carrier_is_named(tmp_path: Path) -> None:
    from inclavare.shim import carrier
    from inclavare.shim.ttrpc_server import RpcError

    with pytest.raises(RpcError, match=r"RUNE_CARRIER='sgx': unknown carrier \(known: native"):
        carrier.convert(str(tmp_path), "sgx", "")


def test_events_through_the_publish_binary(tmp_path: Path) -> None:
    """Without TTRPC_ADDRESS, events go through `<publish-binary> --address A publish
    --topic T --namespace NS` with the Any on standard input. Run in a process of its own:
    the shim's reaper waits for every child of the process it runs in."""
    import subprocess
    import sys

    received = tmp_path / "received"
    binary = tmp_path / "publish"
    binary.write_text(f'#!/bin/sh\necho "$@" >> {received}.args\ncat >> {received}\n')
    binary.chmod(0o755)
    script = (
        "from inclavare.shim.events import Publisher\n"
        "from inclavare.shim.reaper import Reaper\n"
        f"publisher = Publisher('ns', '/run/c.sock', {str(binary)!r}, '', print, Reaper())\n"
        "publisher.publish('/tasks/oom', 'containerd.events.TaskOOM', b'\\n\\x01c')\n"
        "publisher.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    from google.protobuf import any_pb2

    args = (tmp_path / "received.args").read_text().split()
    expected = "--address /run/c.sock publish --topic /tasks/oom --namespace ns"
    assert args == expected.split()
    packed = any_pb2.Any.FromString(received.read_bytes())
    assert packed.type_url == "containerd.events.TaskOOM" and packed.value == b"\n\x01c"
