"""Typed gRPC clients for peers: one channel per peer, service key and request id attached,
a default deadline on every unary call."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.config import ServiceName, Settings
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.interceptors import REQUEST_ID_HEADER, current_request_id

SERVICE_KEY_HEADER = "x-service-key"



class _OutgoingMetadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds the service key and the current request id; gives unary calls a deadline."""

    def __init__(self, service_key: str | None, deadline_s: float) -> None:
        self._service_key = service_key
        self._deadline_s = deadline_s

    def _details(self, details: grpc.aio.ClientCallDetails, unary: bool) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._service_key and SERVICE_KEY_HEADER not in metadata:
            metadata[SERVICE_KEY_HEADER] = self._service_key
        request_id = current_request_id()
        if request_id != "-" and REQUEST_ID_HEADER not in metadata:
            metadata[REQUEST_ID_HEADER] = request_id
        timeout = details.timeout
        if timeout is None and unary:
            timeout = self._deadline_s
        # Peers restart (deploys, crashes): wait for the channel within the deadline rather
        # than failing at once while it reconnects.
        wait = True if details.wait_for_ready is None else details.wait_for_ready
        return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, wait)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=True), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=False), request)


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a failed call's google.rpc.BadRequest detail names (zenthor.errors puts
    one there for every InvalidArgument); empty when there is none."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details disagree with the call's code: trust neither
        return []
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def open_channel(address: str, service_key: str | None, deadline_s: float = 5.0) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        interceptors=[_OutgoingMetadata(service_key, deadline_s)],
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            # Reconnect quickly after a peer restarts (default backoff starts at 1 s and grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ],
    )


class Peers:
    """Lazily opened channels to the other services, as configured by Settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        key = settings.service_key.get_secret_value() if settings.service_key else None
        self._key = key
        self._channels: dict[ServiceName, grpc.aio.Channel] = {}

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = open_channel(
                self._settings.addr_for(service), self._key, self._settings.rpc_deadline_s
            )
        return self._channels[service]

    def stub(self, service: ServiceName) -> Any:
        """The generated stub of `service` on its shared channel."""
        module = importlib.import_module(f"zenthor.gen.zenthor.{service.value}.v1.{service.value}_pb2_grpc")
        return getattr(module, f"{service.proto_service}Stub")(self.channel(service))

    def identity(self) -> Any:
        return self.stub(ServiceName.IDENTITY)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class IdentityPrincipalResolver:
    """Resolves JWT subjects through identity's ResolvePrincipal (wrap in CachingResolver)."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    async def resolve(self, external_id: str) -> ResolvedUser | None:
        try:
            reply = await self._peers.identity().ResolvePrincipal(
                pb.ResolvePrincipalRequest(external_id=external_id)
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(f"identity service: {e.code().name}") from e
        return ResolvedUser(
            user_id=ids.USER.parse(reply.user_id, "user_id"),
            role=Role.ADMIN if reply.role == pb.ROLE_ADMIN else Role.MEMBER,
            status=UserStatus.ACTIVE if reply.status == pb.USER_STATUS_ACTIVE else UserStatus.INACTIVE,
            contact_id=ids.CONTACT.parse(reply.contact_id, "contact_id") if reply.HasField("contact_id") else None,
        )
