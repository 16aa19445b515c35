"""The gRPC wiring of the kubelet's device plugin API v1beta1: the two services' method
handlers and their clients, over the messages generated from proto/deviceplugin.proto.

The method paths ("/v1beta1.DevicePlugin/Allocate", ...) are the wire contract with the
kubelet. The glue is written here rather than generated so that it is typed; the messages
themselves come from protoc (`make build`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc

from inclavare.k8s.proto import deviceplugin_pb2 as pb

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
DEFAULT_DIRECTORY = "/var/lib/kubelet/device-plugins"
REGISTRATION_SERVICE = "v1beta1.Registration"
DEVICE_PLUGIN_SERVICE = "v1beta1.DevicePlugin"


class DevicePluginServicer(Protocol):
    """The DevicePlugin service; the method names are the API's."""

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions: ...

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]: ...

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse: ...

    def Allocate(
        self, request: pb.AllocateRequest, context: grpc.ServicerContext
    ) -> pb.AllocateResponse: ...

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse: ...


class RegistrationServicer(Protocol):
    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty: ...


def _unary(method: Callable[..., Any], request: Any, response: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )


def device_plugin_handler(servicer: DevicePluginServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        DEVICE_PLUGIN_SERVICE,
        {
            "GetDevicePluginOptions": _unary(
                servicer.GetDevicePluginOptions, pb.Empty, pb.DevicePluginOptions
            ),
            "ListAndWatch": grpc.unary_stream_rpc_method_handler(
                servicer.ListAndWatch,
                request_deserializer=pb.Empty.FromString,
                response_serializer=pb.ListAndWatchResponse.SerializeToString,
            ),
            "GetPreferredAllocation": _unary(
                servicer.GetPreferredAllocation,
                pb.PreferredAllocationRequest,
                pb.PreferredAllocationResponse,
            ),
            "Allocate": _unary(servicer.Allocate, pb.AllocateRequest, pb.AllocateResponse),
            "PreStartContainer": _unary(
                servicer.PreStartContainer,
                pb.PreStartContainerRequest,
                pb.PreStartContainerResponse,
            ),
        },
    )


def registration_handler(servicer: RegistrationServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        REGISTRATION_SERVICE,
        {"Register": _unary(servicer.Register, pb.RegisterRequest, pb.Empty)},
    )


def unix_target(path: str) -> str:
    return f"unix://{path}"


class RegistrationClient:
    """The plugin's side of the kubelet's Registration service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Register = channel.unary_unary(
            f"/{REGISTRATION_SERVICE}/Register",
            request_serializer=pb.RegisterRequest.SerializeToString,
            response_deserializer=pb.Empty.FromString,
        )


class DevicePluginClient:
    """The kubelet's side of a device plugin."""

    def __init__(self, channel: grpc.Channel) -> None:
        prefix = f"/{DEVICE_PLUGIN_SERVICE}"
        self.GetDevicePluginOptions = channel.unary_unary(
            f"{prefix}/GetDevicePluginOptions",
            request_serializer=pb.Empty.SerializeToString,
            response_deserializer=pb.DevicePluginOptions.FromString,
        )
        self.ListAndWatch = channel.unary_stream(
            f"{prefix}/ListAndWatch",
            request_serializer=pb.Empty.SerializeToString,
            response_deserializer=pb.ListAndWatchResponse.FromString,
        )
        self.GetPreferredAllocation = channel.unary_unary(
            f"{prefix}/GetPreferredAllocation",
            request_serializer=pb.PreferredAllocationRequest.SerializeToString,
            response_deserializer=pb.PreferredAllocationResponse.FromString,
        )
        self.Allocate = channel.unary_unary(
            f"{prefix}/Allocate",
            request_serializer=pb.AllocateRequest.SerializeToString,
            response_deserializer=pb.AllocateResponse.FromString,
        )
        self.PreStartContainer = channel.unary_unary(
            f"{prefix}/PreStartContainer",
            request_serializer=pb.PreStartContainerRequest.SerializeToString,
            response_deserializer=pb.PreStartContainerResponse.FromString,
        )
