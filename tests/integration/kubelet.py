"""A stand-in for the kubelet's device manager (no kubelet binary exists here), speaking the
real device plugin API v1beta1 over unix sockets in a directory of its own.

Like the kubelet it serves the Registration service on kubelet.sock; on Register it checks
the version and the resource name, then connects back to the plugin's socket, asks for its
options and keeps a ListAndWatch stream open, recording the devices and their health. Admitting
a container for N devices refuses when fewer than N healthy devices are free (the kubelet's
"insufficient" check), asks the plugin for a preferred allocation and calls Allocate. On
start, like the kubelet, it may remove the other sockets of the directory; stopping removes
kubelet.sock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from inclavare.k8s import api
from inclavare.k8s.proto import deviceplugin_pb2 as pb


class Insufficient(Exception):
    """The node cannot admit the container: not enough free healthy devices."""


class PluginEndpoint:
    """The kubelet's connection to one registered plugin."""

    def __init__(self, directory: Path, request: pb.RegisterRequest) -> None:
        self.request = request
        self.resource = request.resource_name
        self.channel = grpc.insecure_channel(api.unix_target(str(directory / request.endpoint)))
        self.client = api.DevicePluginClient(self.channel)
        self.options = self.client.GetDevicePluginOptions(pb.Empty(), timeout=10)
        self.devices: dict[str, str] = {}
        self.updates = 0
        self.allocated: set[str] = set()
        self.stream_ended = threading.Event()
        self._stream = self.client.ListAndWatch(pb.Empty())
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for response in self._stream:
                self.devices = {device.ID: device.health for device in response.devices}
                self.updates += 1
        except grpc.RpcError:
            pass
        finally:
            self.stream_ended.set()

    def healthy_free(self) -> list[str]:
        return [
            device
            for device, health in self.devices.items()
            if health == "Healthy" and device not in self.allocated
        ]

    def admit(self, count: int) -> pb.ContainerAllocateResponse:
        free = self.healthy_free()
        if count > len(free):
            raise Insufficient(
                f"insufficient {self.resource}: requested {count}, available {len(free)}"
            )
        chosen = free[:count]
        if self.options.get_preferred_allocation_available:
            preferred = self.client.GetPreferredAllocation(
                pb.PreferredAllocationRequest(
                    container_requests=[
                        pb.ContainerPreferredAllocationRequest(
                            available_deviceIDs=free, allocation_size=count
                        )
                    ]
                ),
                timeout=10,
            )
            chosen = list(preferred.container_responses[0].deviceIDs)
        response: pb.AllocateResponse = self.client.Allocate(
            pb.AllocateRequest(
                container_requests=[pb.ContainerAllocateRequest(devices_ids=chosen)]
            ),
            timeout=10,
        )
        self.allocated.update(chosen)
        if self.options.pre_start_required:
            self.client.PreStartContainer(pb.PreStartContainerRequest(devices_ids=chosen))
        first: pb.ContainerAllocateResponse = response.container_responses[0]
        return first

    def close(self) -> None:
        self._stream.cancel()
        self.channel.close()
        self._thread.join(5)


class KubeletStandIn:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / api.KUBELET_SOCKET
        self.plugins: dict[str, PluginEndpoint] = {}
        self.registrations: list[pb.RegisterRequest] = []
        self.refuse: str | None = None  # a registration error to answer with
        self._server: grpc.Server | None = None
        self._lock = threading.Lock()

    def start(self, clean: bool = False) -> None:
        if clean:  # the kubelet removes every socket of the directory when it starts
            for entry in self.directory.iterdir():
                if entry.is_socket():
                    entry.unlink()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((api.registration_handler(self),))
        self._server.add_insecure_port(api.unix_target(str(self.socket)))
        self._server.start()

    def stop(self) -> None:
        for plugin in self.plugins.values():
            plugin.close()
        self.plugins.clear()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        if self.socket.exists():
            self.socket.unlink()

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
        if request.version != api.API_VERSION:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requested device plugin API version {request.version} is not supported",
            )
        if "/" not in request.resource_name or request.resource_name.startswith("kubernetes.io/"):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid extended resource name {request.resource_name}",
            )
        if self.refuse is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refuse)
        self.registrations.append(request)
        # The kubelet answers first and connects back to the plugin afterwards.
        threading.Thread(target=self._connect, args=(request,), daemon=True).start()
        return pb.Empty()

    def _connect(self, request: pb.RegisterRequest) -> None:
        endpoint = PluginEndpoint(self.directory, request)
        with self._lock:
            old = self.plugins.pop(request.resource_name, None)
            self.plugins[request.resource_name] = endpoint
        if old is not None:
            old.close()

    def plugin(self, resource: str, timeout: float = 15) -> PluginEndpoint:
        wait_until(
            lambda: resource in self.plugins and bool(self.plugins[resource].devices),
            timeout,
            f"{resource} never registered with devices",
        )
        return self.plugins[resource]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


def socket_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
