"""Server bootstrap shared by every service: interceptors, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import _async as reflection_async
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from zenthor.auth.interceptor import AuthInterceptor
from zenthor.auth.jwt import JwtVerifier
from zenthor.auth.modes import full_method_name, method_auth_modes
from zenthor.auth.resolver import CachingResolver, PrincipalResolver
from zenthor.auth.service_key import ServiceKeyCheck
from zenthor.config import Settings
from zenthor.interceptors import (
    Ctx,
    RequestContextInterceptor,
    RequestDecodingInterceptor,
    UnbuiltMethodInterceptor,
)

__all__ = ["Ctx", "GrpcServer", "ServiceRegistration"]
from zenthor.logs import get_logger
from zenthor.metrics import MetricsInterceptor
from zenthor.ratelimit import RateLimitInterceptor, RateLimits, method_rate_limits
from zenthor.shutdown import STEP_TIMEOUT_S, bounded_step
from zenthor.tracing import server_interceptors as tracing_interceptors

log = get_logger("zenthor.server")


@dataclass(frozen=True)
class ServiceRegistration:
    """One contract service served by a process: its descriptor, the generated servicer base
    class, our implementation, and the generated `add_…_to_server` function."""

    descriptor: ServiceDescriptor
    base: type
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]

    def unbuilt_methods(self) -> list[str]:
        """Methods the implementation does not override (their issue has not landed)."""
        return [
            full_method_name(self.descriptor, m.name)
            for m in self.descriptor.methods
            if getattr(type(self.servicer), m.name) is getattr(self.base, m.name)
        ]


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Server reflection as grpcurl and Postman ask for it: v1 first, v1alpha as the fallback.
    grpcio-reflection ships only v1alpha; v1 is the same messages under a new package name, so
    one servicer answers both."""
    servicer = reflection_async.ReflectionServicer((*service_names, reflection.SERVICE_NAME, REFLECTION_V1))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]  # untyped generated module
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),))


@dataclass
class GrpcServer:
    settings: Settings
    registrations: Sequence[ServiceRegistration]
    resolver: PrincipalResolver
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Refuses to start (MissingAuthMode) if any method lacks an auth mode.
        modes = method_auth_modes(r.descriptor for r in self.registrations)
        key = self.settings.service_key
        key_check = ServiceKeyCheck(key.get_secret_value() if key else None, self.settings.dev_insecure)
        if key_check.open_for_dev:
            log.warning(
                "INSECURE: SERVICE_KEY is not set and ZENTHOR_DEV_INSECURE=1: every service RPC "
                "is open to anyone who can reach this port. Never run like this in production."
            )
        issuer, jwks = self.settings.clerk_jwt_issuer_domain, self.settings.jwks_url
        verifier = (
            JwtVerifier(issuer, self.settings.clerk_jwt_audience, jwks, self.settings.jwt_leeway_s)
            if issuer and jwks
            else None
        )
        unbuilt = [m for r in self.registrations for m in r.unbuilt_methods()]
        # Per-caller budgets (zenthor/ratelimit.py); tests replace their clock (use_clock).
        self.rate_limits = RateLimits(self.settings)
        rate_limits = method_rate_limits(r.descriptor for r in self.registrations)
        self.server = grpc.aio.server(
            interceptors=[
                # Off by default (zenthor/tracing.py); when on, outermost: the span covers the whole
                # call, so every interceptor's log lines carry its trace id.
                *tracing_interceptors(self.settings),
                # Around every interceptor that answers: counts the refused calls too (zenthor/metrics.py).
                MetricsInterceptor(),
                RequestContextInterceptor(),
                AuthInterceptor(modes, key_check, verifier, self.resolver),
                RateLimitInterceptor(self.rate_limits, rate_limits),
                UnbuiltMethodInterceptor(unbuilt),
                RequestDecodingInterceptor(),
            ],
            options=[("grpc.so_reuseport", 0)],
        )
        for registration in self.registrations:
            registration.add_to_server(registration.servicer, self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [r.descriptor.full_name for r in self.registrations]
        _enable_reflection([*names, "grpc.health.v1.Health"], self.server)
        self.port = 0

    async def start(self, port: int | None = None) -> int:
        """Binds and starts; returns the bound port (pass 0 for any free port)."""
        bind_port = port if port is not None else (self.settings.grpc_port or 0)
        self.port = self.server.add_insecure_port(f"{self.settings.grpc_host}:{bind_port}")
        if self.port == 0:
            raise RuntimeError(f"could not bind {self.settings.grpc_host}:{bind_port}")
        if isinstance(self.resolver, CachingResolver):
            await self.resolver.start()  # follows identity's principal changes while serving
        await self.server.start()
        for name in ["", *(r.descriptor.full_name for r in self.registrations)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("server.started", port=self.port, services=[r.descriptor.full_name for r in self.registrations])
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish within the grace, then closes.
        Every step is bounded (zenthor.shutdown): one that hangs is logged and skipped, so
        stopping always ends and the later steps still close their resources."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await bounded_step(self.health.enter_graceful_shutdown(), what="health")
        await bounded_step(self.server.stop(grace), what="grpc server", timeout_s=grace + STEP_TIMEOUT_S)
        if isinstance(self.resolver, CachingResolver):
            await bounded_step(self.resolver.stop(), what="principal changes")
        for callback in self.on_stop:
            await bounded_step(callback(), what=getattr(callback, "__qualname__", repr(callback)))
        log.info("server.stopped", port=self.port)

    async def serve_until_signalled(self) -> None:
        """Runs until SIGTERM/SIGINT, then stops gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("server.signal", note="stopping gracefully")
        await self.stop()
