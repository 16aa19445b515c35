"""The enclave-memory device plugin: serves the DevicePlugin service on its own unix socket
in the kubelet's device-plugins directory and registers with the kubelet there.

The kubelet forgets its plugins when it restarts: it recreates kubelet.sock and removes the
other sockets of the directory. The plugin therefore watches both sockets (polling their
identity, which needs no platform support and costs one stat each per interval) and, when
kubelet.sock is new or its own socket is gone, serves on a fresh socket and registers again.
The health of the devices is re-checked at the same pace and sent through every open
ListAndWatch stream when it changes: all devices are Unhealthy while the host's EPC is gone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc

from inclavare import log
from inclavare.errors import InclavareError
from inclavare.k8s import api
from inclavare.k8s.epcpool import HEALTHY, UNHEALTHY, AllocationError, EpcPool
from inclavare.k8s.proto import deviceplugin_pb2 as pb

# Streams poll their context at this pace, so that a kubelet that went away frees its thread.
STREAM_CHECK_SECONDS = 1.0
REGISTER_TIMEOUT_SECONDS = 10.0
WORKERS = 8


class PluginError(InclavareError):
    """The plugin cannot serve or register."""


class RegistrationRefused(PluginError):
    """The kubelet answered the registration with an error."""


class EpcServicer:
    """The DevicePlugin service over an EPC pool, and the device health it reports."""

    def __init__(self, pool: EpcPool) -> None:
        self.pool = pool
        self._changed = threading.Condition()
        self._healthy = True
        self._generation = 0
        self._closing = False

    # --- state shared with the watch loop -------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    def set_health(self, healthy: bool) -> bool:
        """Record the devices' health; True when it changed (the streams are told)."""
        with self._changed:
            if healthy == self._healthy:
                return False
            self._healthy = healthy
            self._generation += 1
            self._changed.notify_all()
            return True

    def close(self) -> None:
        """End every ListAndWatch stream."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def reopen(self) -> None:
        with self._changed:
            self._closing = False

    def device_list(self) -> pb.ListAndWatchResponse:
        health = HEALTHY if self._healthy else UNHEALTHY
        return pb.ListAndWatchResponse(
            devices=[pb.Device(ID=device_id, health=health) for device_id in self.pool.ids]
        )

    # --- the DevicePlugin service -----------------------------------------------------------

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return plugin_options()

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]:
        with self._changed:
            generation = self._generation
            response = self.device_list()
        yield response
        while True:
            with self._changed:
                while generation == self._generation and not self._closing and context.is_active():
                    self._changed.wait(STREAM_CHECK_SECONDS)
                if self._closing or not context.is_active():
                    return
                generation = self._generation
                response = self.device_list()
            yield response

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        responses = []
        for container in request.container_requests:
            try:
                chosen = self.pool.preferred(
                    list(container.available_deviceIDs),
                    list(container.must_include_deviceIDs),
                    container.allocation_size,
                )
            except AllocationError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return pb.PreferredAllocationResponse(container_responses=responses)

    def Allocate(
        self, request: pb.AllocateRequest, context: grpc.ServicerContext
    ) -> pb.AllocateResponse:
        if not request.container_requests:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "allocate request has no containers")
        if not self._healthy:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the host's enclave memory is not available (devices are unhealthy)",
            )
        responses = []
        try:
            self.pool.check_distinct(list(c.devices_ids) for c in request.container_requests)
            for container in request.container_requests:
                budget = self.pool.budget_mib(list(container.devices_ids))
                envs, annotations = self.pool.container_settings(budget)
                responses.append(pb.ContainerAllocateResponse(envs=envs, annotations=annotations))
                log.info(f"allocated {budget} MiB of enclave memory to a container")
        except AllocationError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return pb.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


def plugin_options() -> pb.DevicePluginOptions:
    return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


def _identity(path: str) -> tuple[int, int, int] | None:
    """What tells a socket file from its successor at the same path."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DevicePlugin:
    """Serves an EPC pool as `resource_name` through the kubelet in `directory`."""

    def __init__(
        self,
        pool: EpcPool,
        resource_name: str,
        directory: str = api.DEFAULT_DIRECTORY,
        endpoint: str = "inclavare-epc.sock",
        health: Callable[[], bool] | None = None,
        interval: float = 1.0,
    ) -> None:
        if "/" in endpoint:
            raise PluginError(f"the plugin's socket name {endpoint!r} must not contain '/'")
        if not os.path.isdir(directory):
            raise PluginError(f"the device-plugins directory {directory} does not exist")
        self.pool = pool
        self.resource_name = resource_name
        self.directory = directory
        self.endpoint = endpoint
        self.socket_path = os.path.join(directory, endpoint)
        self.kubelet_socket = os.path.join(directory, api.KUBELET_SOCKET)
        self.health = health
        self.interval = interval
        self.servicer = EpcServicer(pool)
        self._server: grpc.Server | None = None
        self._served: tuple[int, int, int] | None = None
        self._registered_with: tuple[int, int, int] | None = None
        self._told_unanswered = False  # said once per outage, not at every retry
        self.registrations = 0

    def serve(self) -> None:
        """Listen on a fresh socket."""
        self.stop_serving()
        if not os.path.isdir(self.directory):
            raise PluginError(f"the device-plugins directory {self.directory} does not exist")
        _remove(self.socket_path)
        self.servicer.reopen()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
        server.add_generic_rpc_handlers((api.device_plugin_handler(self.servicer),))
        if server.add_insecure_port(api.unix_target(self.socket_path)) == 0:
            raise PluginError(f"cannot listen on {self.socket_path}")
        server.start()
        self._server = server
        self._served = _identity(self.socket_path)
        log.info(f"serving {self.resource_name} on {self.socket_path}")

    def stop_serving(self) -> None:
        if self._server is None:
            return
        self.servicer.close()
        self._server.stop(grace=1.0).wait()
        self._server = None
        if _identity(self.socket_path) == self._served:
            _remove(self.socket_path)  # only the socket this plugin made, not a successor
        self._served = None

    def register(self) -> bool:
        """Register with the kubelet; False when no kubelet listens yet (try again later).
        A kubelet that refuses the registration is an error."""
        kubelet = _identity(self.kubelet_socket)
        if kubelet is None:
            return False
        request = pb.RegisterRequest(
            version=api.API_VERSION,
            endpoint=self.endpoint,
            resource_name=self.resource_name,
            options=plugin_options(),
        )
        with grpc.insecure_channel(api.unix_target(self.kubelet_socket)) as channel:
            try:
                api.RegistrationClient(channel).Register(
                    request, timeout=REGISTER_TIMEOUT_SECONDS, wait_for_ready=False
                )
            except grpc.RpcError as error:
                code = error.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    if not self._told_unanswered:
                        log.warning(f"the kubelet at {self.kubelet_socket} does not answer yet")
                        self._told_unanswered = True
                    return False
                raise RegistrationRefused(
                    f"the kubelet refused the registration of {self.resource_name}: "
                    f"{error.details()}"
                ) from None
        self._registered_with = kubelet
        self._told_unanswered = False
        self.registrations += 1
        log.info(f"registered {self.resource_name} with the kubelet at {self.kubelet_socket}")
        return True

    def check(self) -> None:
        """One round of the watch loop: health, our socket, the kubelet's socket."""
        if self.health is not None and self.servicer.set_health(self.health()):
            state = "healthy" if self.servicer.healthy else "unhealthy: the EPC is gone"
            log.warning(f"{self.resource_name} devices are now {state}")
        kubelet = _identity(self.kubelet_socket)
        ours = _identity(self.socket_path)
        if ours is None or ours != self._served:
            if kubelet is None:
                return  # the kubelet is restarting; serve again once it is back
            log.info(f"{self.socket_path} was removed: serving again")
            self.serve()
            self._registered_with = None
        if kubelet is not None and kubelet != self._registered_with:
            self.register()
        elif kubelet is None and self._registered_with is not None:
            log.warning(f"the kubelet's socket {self.kubelet_socket} is gone: waiting for it")
            self._registered_with = None

    def run(self, stop: threading.Event) -> None:
        """Serve, register and watch until `stop` is set; the socket is removed at the end."""
        if self.health is not None:
            self.servicer.set_health(self.health())
        self.serve()
        try:
            self.register()
            while not stop.wait(self.interval):
                self.check()
        finally:
            self.stop_serving()
