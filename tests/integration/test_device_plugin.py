"""inclavare-device-plugin, the installed program, against a kubelet stand-in that speaks the
real Registration and DevicePlugin gRPC API over unix sockets (tests/integration/kubelet.py):
registration, allocation and its exhaustion, malformed requests, a kubelet that restarts or
whose socket vanishes, device health, and shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inclavare.k8s import api
from inclavare.k8s.proto import deviceplugin_pb2 as pb
from tests.integration.conftest import rune_path
from tests.integration.kubelet import Insufficient, KubeletStandIn, socket_identity, wait_until

RESOURCE = "inclavare.io/epc"
MIB = 1 << 20


def plugin_program() -> str:
    program = os.path.join(os.path.dirname(rune_path()), "inclavare-device-plugin")
    if not os.access(program, os.X_OK):
        pytest.skip(f"inclavare-device-plugin is not installed at {program}: run `make install`")
    return program


@pytest.fixture
def directory() -> Iterator[Path]:
    # Short: a unix socket's path has at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="dp-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def kubelet(directory: Path) -> Iterator[KubeletStandIn]:
    standin = KubeletStandIn(directory)
    standin.start()
    yield standin
    standin.stop()


class Plugin:
    def __init__(self, directory: Path, *args: str) -> None:
        self.socket = directory / "inclavare-epc.sock"
        self.log = directory.parent / f"{directory.name}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [plugin_program(), "--directory", str(directory), "--interval", "0.1", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(20)
        return code

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_plugin(directory: Path) -> Iterator[type[Plugin]]:
    started: list[Plugin] = []

    def start(*args: str) -> Plugin:
        plugin = Plugin(directory, *args)
        started.append(plugin)
        return plugin

    yield start  # type: ignore[misc]
    for plugin in started:
        plugin.stop()
        plugin.log.unlink(missing_ok=True)


def test_registers_advertises_and_allocates_until_exhausted(
    kubelet: KubeletStandIn, start_plugin
) -> None:
    plugin = start_plugin("--epc-mib", "64")
    endpoint = kubelet.plugin(RESOURCE)
    request = kubelet.registrations[0]
    assert (request.version, request.endpoint) == ("v1beta1", "inclavare-epc.sock")
    assert request.options.get_preferred_allocation_available
    assert not endpoint.options.pre_start_required
    assert endpoint.devices == {f"epc-{index}": "Healthy" for index in range(64)}

    first = endpoint.admit(16)
    assert dict(first.envs) == {"ENCLAVE_EPC_LIMIT_MIB": "16"}
    assert dict(first.annotations) == {"enclave.epc.limit.mib": "16"}
    assert endpoint.allocated == {f"epc-{index}" for index in range(16)}  # the preferred ones
    assert dict(endpoint.admit(40).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "40"}
    with pytest.raises(Insufficient, match="requested 16, available 8"):
        endpoint.admit(16)
    assert dict(endpoint.admit(8).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "8"}
    assert plugin.stop() == 0
    assert not plugin.socket.exists()
    assert "registered inclavare.io/epc" in plugin.output()


def test_compatible_resource_name_and_larger_units(kubelet: KubeletStandIn, start_plugin) -> None:
    start_plugin("--epc-mib", "64", "--unit-mib", "4", "--resource-name", "sgx.intel.com/epc")
    endpoint = kubelet.plugin("sgx.intel.com/epc")
    assert len(endpoint.devices) == 16
    assert dict(endpoint.admit(3).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "12"}


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([["epc-99"]], "unknown device id 'epc-99': this plugin has epc-0..epc-7"),
        ([["epc-1", "epc-1"]], "device id epc-1 is requested twice"),
        ([["epc-1"], ["epc-1"]], "device id epc-1 is requested twice"),
        ([[]], "allocate request for a container names no devices"),
        ([], "allocate request has no containers"),
        ([["x" * 5000]], "unknown device id 'xxxxxxxx"),
    ],
)
def test_malformed_allocate_is_invalid_argument(
    kubelet: KubeletStandIn, start_plugin, requests: list[list[str]], message: str
) -> None:
    start_plugin("--epc-mib", "8")
    endpoint = kubelet.plugin(RESOURCE)
    with pytest.raises(grpc.RpcError) as caught:
        endpoint.client.Allocate(
            pb.AllocateRequest(
                container_requests=[
                    pb.ContainerAllocateRequest(devices_ids=ids) for ids in requests
                ]
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert details.startswith(message) and "\n" not in details and len(details) < 200
    # The plugin goes on serving.
    assert dict(endpoint.admit(1).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "1"}


def test_malformed_preferred_allocation_and_garbage_bytes(
    kubelet: KubeletStandIn, start_plugin, directory: Path
) -> None:
    start_plugin("--epc-mib", "8")
    endpoint = kubelet.plugin(RESOURCE)
    with pytest.raises(grpc.RpcError) as caught:
        endpoint.client.GetPreferredAllocation(
            pb.PreferredAllocationRequest(
                container_requests=[
                    pb.ContainerPreferredAllocationRequest(
                        available_deviceIDs=["epc-1"], allocation_size=2
                    )
                ]
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "2 devices asked for, 1 of this plugin's are available"
    # Bytes that are no AllocateRequest: gRPC refuses them before the plugin's code runs.
    with grpc.insecure_channel(api.unix_target(str(directory / "inclavare-epc.sock"))) as channel:
        raw = channel.unary_unary("/v1beta1.DevicePlugin/Allocate")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert dict(endpoint.admit(2).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "2"}


@pytest.mark.parametrize("clean", [False, True], ids=["socket-recreated", "directory-cleaned"])
def test_reregisters_when_the_kubelet_restarts(
    kubelet: KubeletStandIn, start_plugin, directory: Path, clean: bool
) -> None:
    plugin = start_plugin("--epc-mib", "32")
    kubelet.plugin(RESOURCE).admit(30)
    kubelet.stop()
    kubelet.start(clean=clean)  # a new kubelet.sock; with clean, the plugin's socket is gone
    wait_until(lambda: len(kubelet.registrations) == 2, 15, "the plugin did not register again")
    endpoint = kubelet.plugin(RESOURCE)
    assert len(endpoint.devices) == 32
    assert dict(endpoint.admit(32).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "32"}
    assert plugin.process.poll() is None
    if clean:
        assert "was removed: serving again" in plugin.output()


def test_kubelet_socket_that_vanishes_and_comes_back(
    kubelet: KubeletStandIn, start_plugin, directory: Path
) -> None:
    plugin = start_plugin("--epc-mib", "16")
    kubelet.plugin(RESOURCE)
    kubelet.stop()
    wait_until(lambda: "is gone: waiting for it" in plugin.output(), 15, "no warning")
    assert plugin.process.poll() is None
    assert socket_identity(plugin.socket) is not None
    kubelet.start()
    wait_until(lambda: len(kubelet.registrations) == 2, 15, "the plugin did not register again")
    assert len(kubelet.plugin(RESOURCE).devices) == 16


def test_plugin_started_before_the_kubelet_registers_once_it_appears(
    directory: Path, start_plugin
) -> None:
    plugin = start_plugin("--epc-mib", "4")
    wait_until(plugin.socket.exists, 15, "the plugin never listened")
    standin = KubeletStandIn(directory)
    standin.start()
    try:
        assert len(standin.plugin(RESOURCE).devices) == 4
    finally:
        standin.stop()


def write_cpuid(path: Path, epc_mib: int) -> None:
    """A file laid out like /dev/cpu/0/cpuid with one EPC section (CPUID leaf 0x12.2)."""
    size = epc_mib * MIB
    with open(path, "wb") as device:
        device.seek(0x12 | (2 << 32))
        device.write(struct.pack("<4I", 0x80000001, 0, (size & 0xFFFFF000) | 1, size >> 32))
        device.seek(0x12 | (3 << 32))
        device.write(struct.pack("<4I", 0, 0, 0, 0))  # sub-leaf 3: no more sections


def test_sgx_epc_from_cpuid_and_health_when_it_disappears(
    kubelet: KubeletStandIn, start_plugin, directory: Path
) -> None:
    cpuinfo = directory.parent / f"{directory.name}.cpuinfo"
    cpuid = directory.parent / f"{directory.name}.cpuid"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sgx sgx_lc\n")
    write_cpuid(cpuid, 93)
    try:
        start_plugin("--cpuinfo", str(cpuinfo), "--cpuid-device", str(cpuid))
        endpoint = kubelet.plugin(RESOURCE)
        assert set(endpoint.devices.values()) == {"Healthy"} and len(endpoint.devices) == 93
        cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu\n")  # SGX switched off
        wait_until(lambda: set(endpoint.devices.values()) == {"Unhealthy"}, 15, "never unhealthy")
        with pytest.raises(Insufficient, match="requested 1, available 0"):
            endpoint.admit(1)
        with pytest.raises(grpc.RpcError) as caught:
            endpoint.client.Allocate(
                pb.AllocateRequest(
                    container_requests=[pb.ContainerAllocateRequest(devices_ids=["epc-0"])]
                ),
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sgx sgx_lc\n")
        wait_until(lambda: set(endpoint.devices.values()) == {"Healthy"}, 15, "never healthy")
        assert dict(endpoint.admit(93).envs) == {"ENCLAVE_EPC_LIMIT_MIB": "93"}
    finally:
        cpuinfo.unlink()
        cpuid.unlink()


def run_plugin(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [plugin_program(), "--directory", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cpuinfo", "/dev/null"],
            "this host has no SGX (no sgx flag in /proc/cpuinfo): give the enclave memory of "
            "the sim TEE with --epc-mib",
        ),
        (
            ["--epc-mib", "8", "--resource-name", "epc"],
            "invalid resource name 'epc': an extended resource name is DOMAIN/NAME, e.g. "
            "inclavare.io/epc, outside kubernetes.io",
        ),
        (["--epc-mib", "2", "--unit-mib", "4"], "2 MiB of enclave memory is less than one"),
        (["--epc-mib", "8", "--endpoint", "a/b"], "the plugin's socket name 'a/b' must not"),
    ],
)
def test_unusable_configuration(directory: Path, args: list[str], message: str) -> None:
    result = run_plugin(directory, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"inclavare-device-plugin: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(directory.iterdir()) == []


def test_missing_directory(directory: Path) -> None:
    result = run_plugin(directory / "absent", "--epc-mib", "8")
    assert result.returncode == 2
    assert result.stderr == (
        f"inclavare-device-plugin: the device-plugins directory {directory}/absent does not exist\n"
    )


def test_bad_flag_values(directory: Path) -> None:
    result = run_plugin(directory, "--epc-mib", "lots")
    assert result.returncode == 2
    assert "argument --epc-mib: 'lots' is not a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_refused_registration_ends_the_plugin(kubelet: KubeletStandIn, directory: Path) -> None:
    kubelet.refuse = "resource inclavare.io/epc is already registered"
    result = run_plugin(directory, "--epc-mib", "8")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "inclavare-device-plugin: the kubelet refused the registration of inclavare.io/epc: "
        "resource inclavare.io/epc is already registered"
    )
    assert not (directory / "inclavare-epc.sock").exists()
