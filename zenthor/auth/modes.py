"""Reads each method's declared auth mode from the contract's descriptors."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from google.protobuf.descriptor import ServiceDescriptor

from zenthor.gen.zenthor.common.v1 import auth_pb2


class AuthMode(IntEnum):
    UNSPECIFIED = auth_pb2.AUTH_MODE_UNSPECIFIED
    PUBLIC = auth_pb2.AUTH_MODE_PUBLIC
    SIGNED_IN = auth_pb2.AUTH_MODE_SIGNED_IN
    USER = auth_pb2.AUTH_MODE_USER
    ADMIN = auth_pb2.AUTH_MODE_ADMIN
    SERVICE = auth_pb2.AUTH_MODE_SERVICE


# Standard services every server carries beside its own; probes and grpcurl need them open.
INFRASTRUCTURE_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class MissingAuthMode(RuntimeError):
    """A method of the contract does not say who may call it; the server must not start."""


def full_method_name(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def method_auth_modes(services: Iterable[ServiceDescriptor]) -> dict[str, AuthMode]:
    """`/pkg.Service/Method` → mode, for every method; raises MissingAuthMode listing every
    method that declares none."""
    modes: dict[str, AuthMode] = {}
    missing: list[str] = []
    for service in services:
        for method in service.methods:
            name = full_method_name(service, method.name)
            mode = AuthMode(method.GetOptions().Extensions[auth_pb2.auth_mode])
            if mode is AuthMode.UNSPECIFIED:
                missing.append(name)
            modes[name] = mode
    if missing:
        raise MissingAuthMode(
            "refusing to start: these methods declare no (zenthor.common.v1.auth_mode): "
            + ", ".join(sorted(missing))
        )
    return modes

