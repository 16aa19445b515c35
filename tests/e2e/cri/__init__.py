"""A small client of the Kubernetes CRI (runtime.v1) over gRPC, calling containerd's CRI
plugin as the kubelet does.

The messages come from runtime_v1.proto beside this file, compiled with grpcio-tools' protoc
into a temporary directory when the tests start (they are test code, not part of the
product's build); the calls are plain unary gRPC methods on a channel to the unix socket.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PROTO = Path(__file__).resolve().with_name("runtime_v1.proto")
MODULE = "runtime_v1_pb2"


def compile_messages(directory: Path) -> ModuleType:
    """runtime_v1.proto compiled into `directory` and imported (once per process: protobuf
    registers a file's descriptors globally)."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    from grpc_tools import protoc

    status = protoc.main(
        ["protoc", f"-I{PROTO.parent}", f"--python_out={directory}", str(PROTO.name)]
    )
    if status != 0:
        raise AssertionError(f"protoc failed on {PROTO}")
    spec = importlib.util.spec_from_file_location(MODULE, directory / f"{MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    return module


class CriClient:
    """RuntimeService and ImageService calls: `client.runtime("Version", request)`."""

    def __init__(self, socket: Path, messages: ModuleType, timeout: float = 60) -> None:
        self.messages = messages
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix://{socket}")

    def close(self) -> None:
        self.channel.close()

    def _call(self, service: str, method: str, request: Any) -> Any:
        response_type = getattr(self.messages, f"{method}Response")
        call = self.channel.unary_unary(
            f"/runtime.v1.{service}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return call(request, timeout=self.timeout, wait_for_ready=True)

    def runtime(self, method: str, request: Any = None, **fields: Any) -> Any:
        """A RuntimeService call; the request is given, or built from `fields`."""
        if request is None:
            request = getattr(self.messages, f"{method}Request")(**fields)
        return self._call("RuntimeService", method, request)

    def image(self, method: str, request: Any = None, **fields: Any) -> Any:
        if request is None:
            request = getattr(self.messages, f"{method}Request")(**fields)
        return self._call("ImageService", method, request)
