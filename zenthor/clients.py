"""Typed gRPC clients for peers: one channel per peer, service key and request id attached,
a default deadline on every unary call."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.auth.service_key import SERVICE_KEY_HEADER
from zenthor.config import ServiceName, Settings
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc as agent_queue_grpc
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc as approvals_grpc
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc as delivery_grpc
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc as identity_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc as messages_grpc
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2_grpc as plugins_grpc
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2_grpc as todoist_grpc
from zenthor.interceptors import REQUEST_ID_HEADER, current_request_id
from zenthor.tracing import client_interceptors

# Where grpc-status puts the google.rpc.Status of a failed call.
GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"


class _OutgoingMetadata:
    """Adds the service key and the current request id; gives unary calls a deadline."""

    def __init__(self, service_key: str | None, deadline_s: float) -> None:
        self._service_key = service_key
        self._deadline_s = deadline_s

    def _details(self, details: grpc.aio.ClientCallDetails, unary: bool) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._service_key and metadata.get(SERVICE_KEY_HEADER) is None:
            metadata[SERVICE_KEY_HEADER] = self._service_key
        request_id = current_request_id()
        if request_id != "-" and metadata.get(REQUEST_ID_HEADER) is None:
            metadata[REQUEST_ID_HEADER] = request_id
        timeout = details.timeout
        if timeout is None and unary:
            timeout = self._deadline_s
        # Peers restart (deploys, crashes): wait for the channel within the deadline rather
        # than failing at once while it reconnects.
        wait = True if details.wait_for_ready is None else details.wait_for_ready
        return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, wait)


# grpc.aio files an interceptor object under the FIRST call type it implements, so one object
# for both would leave server streams (Watch…) without the service key: one class per type.
class _UnaryMetadata(_OutgoingMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=True), request)


class _StreamMetadata(_OutgoingMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=False), request)


def rpc_status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a failed call carries in its trailers; None when there is none
    or when it disagrees with the call's code (then trust neither)."""
    for key, value in error.trailing_metadata() or ():
        if key == GRPC_DETAILS_METADATA_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            return status if status.code == error.code().value[0] else None
    return None


def health_check(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]:
    """grpc.health.v1 Check on `channel`, typed (the health package's stub is not)."""
    return channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a failed call's google.rpc.BadRequest detail names (zenthor.errors puts
    one there for every InvalidArgument); empty when there is none."""
    status = rpc_status_of(error)
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


# Target schemes that resolve to several addresses (`dns:///svc:port` on a headless Service in
# Kubernetes, `ipv4:a:p,b:p`): calls are spread over all of them. A bare `host:port` keeps gRPC's
# default pick_first (one connection), which is what `make dev`'s single processes need.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def lb_policy_for(address: str) -> str:
    """The load-balancing policy an address gets: ZENTHOR_<SERVICE>_ADDR=dns:///… is the setting
    that turns round_robin on (deploy/k8s/base/config.env)."""
    return "round_robin" if address.startswith(BALANCED_SCHEMES) else "pick_first"


def open_channel(
    address: str,
    service_key: str | None,
    deadline_s: float = 5.0,
    *,
    lb_policy: str | None = None,
    tracing: bool = False,
) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        interceptors=[
            # With tracing on (zenthor/tracing.py): a client span per call, `traceparent` sent along.
            *client_interceptors(tracing),
            _UnaryMetadata(service_key, deadline_s),
            _StreamMetadata(service_key, deadline_s),
        ],
        options=[
            ("grpc.lb_policy_name", lb_policy or lb_policy_for(address)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            # Reconnect quickly after a peer restarts (default backoff starts at 1 s and grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ],
    )


class Peers:
    """Lazily opened channels to the other services, as configured by Settings, and a typed
    stub per service on them (`peers.messages().SendMessage(…)`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        key = settings.service_key.get_secret_value() if settings.service_key else None
        self._key = key
        self._channels: dict[ServiceName, grpc.aio.Channel] = {}

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = open_channel(
                self._settings.addr_for(service),
                self._key,
                self._settings.rpc_deadline_s,
                tracing=self._settings.tracing_enabled,
            )
        return self._channels[service]

    def identity(self) -> identity_grpc.IdentityServiceAsyncStub:
        return identity_grpc.IdentityServiceStub(self.channel(ServiceName.IDENTITY))

    def messages(self) -> messages_grpc.MessagesServiceAsyncStub:
        return messages_grpc.MessagesServiceStub(self.channel(ServiceName.MESSAGES))

    def agent_queue(self) -> agent_queue_grpc.AgentQueueServiceAsyncStub:
        return agent_queue_grpc.AgentQueueServiceStub(self.channel(ServiceName.AGENT_QUEUE))

    def delivery(self) -> delivery_grpc.DeliveryServiceAsyncStub:
        return delivery_grpc.DeliveryServiceStub(self.channel(ServiceName.DELIVERY))

    def approvals(self) -> approvals_grpc.ApprovalsServiceAsyncStub:
        return approvals_grpc.ApprovalsServiceStub(self.channel(ServiceName.APPROVALS))

    def plugins(self) -> plugins_grpc.PluginsServiceAsyncStub:
        return plugins_grpc.PluginsServiceStub(self.channel(ServiceName.PLUGINS))

    def todoist(self) -> todoist_grpc.TodoistServiceAsyncStub:
        return todoist_grpc.TodoistServiceStub(self.channel(ServiceName.TODOIST))

    def unary_method(self, service: ServiceName, rpc: str) -> UnaryMethod:
        """A unary RPC chosen by name at run time (Temporal's retry and sweep targets), with
        its request class; KeyError when `service` has no such unary RPC."""
        pb2 = importlib.import_module(f"zenthor.gen.zenthor.{service.value}.v1.{service.value}_pb2")
        descriptor = pb2.DESCRIPTOR.services_by_name[service.proto_service]
        method = descriptor.methods_by_name[rpc]
        if method.client_streaming or method.server_streaming:
            raise KeyError(rpc)
        request_type: type[Message] = getattr(pb2, method.input_type.name)
        response_type: type[Message] = getattr(pb2, method.output_type.name)
        call = self.channel(service).unary_unary(
            f"/{descriptor.full_name}/{rpc}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return UnaryMethod(request_type=request_type, response_type=response_type, call=call)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


@dataclass(frozen=True)
class UnaryMethod:
    """A unary RPC looked up by name: build `request_type(...)`, then `await call(request)`."""

    request_type: type[Message]
    response_type: type[Message]
    call: grpc.aio.UnaryUnaryMultiCallable[Message, Message]


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
