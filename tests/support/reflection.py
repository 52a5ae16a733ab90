"""A server-reflection client as grpcurl uses it: v1 (or v1alpha) over a real channel."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


class ReflectionClient:
    """Lists services and loads their file descriptors into a pool, one request per stream."""

    def __init__(self, channel: grpc.Channel, *, method: str = V1, timeout_s: float = 10.0) -> None:
        self._call = channel.stream_stream(
            method,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self._timeout_s = timeout_s
        self.pool = descriptor_pool.DescriptorPool()
        self._loaded: set[str] = set()

    def _ask(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        (response,) = list(self._call(iter([request]), timeout=self._timeout_s))
        if response.HasField("error_response"):
            raise LookupError(response.error_response.error_message)
        return response

    def list_services(self) -> list[str]:
        response = self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return [s.name for s in response.list_services_response.service]

    def resolve_service(self, name: str) -> list[str]:
        """Loads the file defining `name` (and its imports) and returns its methods' full names,
        each checked to resolve with its input and output types."""
        response = self._ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=name))
        self._add(response.file_descriptor_response.file_descriptor_proto)
        service = self.pool.FindServiceByName(name)
        methods = []
        for method in service.methods:
            assert method.input_type.full_name and method.output_type.full_name
            methods.append(method.full_name)
        return methods

    def _add(self, blobs: Iterator[bytes] | list[bytes]) -> None:
        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in blobs]
        pending = {f.name: f for f in files if f.name not in self._loaded}
        while pending:
            progressed = False
            for name, proto in list(pending.items()):
                if all(dep in self._loaded for dep in proto.dependency):
                    self.pool.Add(proto)
                    self._loaded.add(name)
                    del pending[name]
                    progressed = True
            if not progressed:
                missing = {d for p in pending.values() for d in p.dependency if d not in self._loaded}
                for dep in missing:
                    response = self._ask(reflection_pb2.ServerReflectionRequest(file_by_filename=dep))
                    extra = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in response.file_descriptor_response.file_descriptor_proto]
                    pending.update({f.name: f for f in extra if f.name not in self._loaded})
