"""The seven real services in-process on one test database, for the hostile-input suite:
each on its own socket, finding its peers as in production, with the fake Clerk issuer
minting tokens for a member and an admin who exist in identity.

Callers talk to it with plain (synchronous) gRPC channels from a worker thread, so that
Hypothesis can drive the cases while the servers run on the test's event loop."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import ServiceDescriptor

from tests.support.builders import add_user
from tests.support.database import TestDatabase
from tests.support.grpc_client import SERVICE_KEY, bearer, service
from tests.support.hostile_pool import IdPool
from tests.support.jwks import FakeClerkIssuer
from zenthor import ids
from zenthor.auth.modes import AuthMode, method_auth_modes
from zenthor.config import ServiceName, Settings
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as ap
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as dl
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as idn
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as ms
from zenthor.server import GrpcServer

SettingsFor = Callable[..., Settings]

# Principals change nowhere in this suite, so a long principal cache keeps the cases cheap
# (one ResolvePrincipal per service and user instead of one per call).
PRINCIPAL_CACHE_TTL_S = 300.0
TOKEN_LIFETIME_S = 3 * 3600  # outlives the longest soak run

MEMBER_SUBJECT = "user_hostile_member"
ADMIN_SUBJECT = "user_hostile_admin"
INACTIVE_SUBJECT = "user_hostile_gone"
NEWCOMER_SUBJECT = "user_hostile_newcomer"  # signed in at Clerk, no users row yet


def service_descriptor(name: ServiceName) -> ServiceDescriptor:
    module = import_module(f"zenthor.gen.zenthor.{name.value}.v1.{name.value}_pb2")
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name.proto_service]
    return descriptor


def build_server_of(name: ServiceName) -> Callable[[Settings], object]:
    build: Callable[[Settings], object] = import_module(f"services.{name.value}.app").build_server
    return build


@dataclass(frozen=True)
class Credential:
    """What a case presents: `fits` when it is what the method's auth mode asks for."""

    name: str
    metadata: tuple[tuple[str, str], ...]
    fits: bool


@dataclass
class HostileStack:
    db: TestDatabase
    addresses: dict[ServiceName, str]
    modes: dict[str, AuthMode]
    right: dict[AuthMode, list[Credential]]
    wrong: dict[AuthMode, list[Credential]]
    pool: IdPool
    member_id: uuid.UUID
    admin_id: uuid.UUID
    channels: dict[ServiceName, grpc.Channel] = field(default_factory=dict)

    def channel(self, name: ServiceName) -> grpc.Channel:
        """A synchronous channel to `name`, opened on first use (by the thread that calls)."""
        if name not in self.channels:
            self.channels[name] = grpc.insecure_channel(
                self.addresses[name], options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            )
        return self.channels[name]

    def close_channels(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()


@contextmanager
def _held_ports(count: int) -> Iterator[list[socket.socket]]:
    """Sockets bound to free ports; held until the servers bind (closed right before), so no
    other test grabs one in between, and kept bound-but-silent for unreachable addresses."""
    with ExitStack() as stack:
        held = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        yield held


def _credentials(issuer: FakeClerkIssuer) -> tuple[dict[AuthMode, list[Credential]], dict[AuthMode, list[Credential]]]:
    def token(sub: str, **claims: Any) -> tuple[tuple[str, str], ...]:
        return bearer(issuer.token(sub, expires_in=TOKEN_LIFETIME_S, **claims))

    member = Credential("member", token(MEMBER_SUBJECT, email="member@example.com", email_verified=True), True)
    admin = Credential("admin", token(ADMIN_SUBJECT, email="boss@example.com", email_verified=True), True)
    newcomer = Credential("newcomer", token(NEWCOMER_SUBJECT, email="new@example.com", email_verified=True), True)
    key = Credential("service-key", service(), True)
    none = Credential("none", (), False)
    wrong_key = Credential("wrong-service-key", service("not-the-key"), False)
    garbage = Credential("garbage-bearer", (("authorization", "Bearer not.a.jwt"),), False)
    expired = Credential("expired", bearer(issuer.token(MEMBER_SUBJECT, expires_in=-3600)), False)
    stranger = Credential("unknown-subject", token("user_hostile_stranger"), False)
    inactive = Credential("deactivated", token(INACTIVE_SUBJECT), False)
    as_wrong = [replace_fits(c) for c in (member, key)]
    right = {
        AuthMode.PUBLIC: [none],
        AuthMode.SIGNED_IN: [member, newcomer],
        AuthMode.USER: [member, member, member, admin],
        AuthMode.ADMIN: [admin],
        AuthMode.SERVICE: [key],
    }
    common_wrong = [none, wrong_key, garbage, expired]
    wrong = {
        AuthMode.PUBLIC: [garbage, expired, wrong_key],  # an open method ignores what it is sent
        AuthMode.SIGNED_IN: [*common_wrong, as_wrong[1]],
        AuthMode.USER: [*common_wrong, stranger, inactive, as_wrong[1]],
        AuthMode.ADMIN: [*common_wrong, stranger, inactive, as_wrong[0], as_wrong[1]],
        AuthMode.SERVICE: [*common_wrong, as_wrong[0]],
    }
    return right, wrong


def replace_fits(credential: Credential) -> Credential:
    return Credential(f"{credential.name}-on-wrong-mode", credential.metadata, False)


@asynccontextmanager
async def hostile_stack(settings_for: SettingsFor, db: TestDatabase, issuer: FakeClerkIssuer) -> AsyncIterator[HostileStack]:
    """All seven services serving on one database, users and a few rows seeded."""
    names = list(ServiceName)
    servers: list[GrpcServer] = []
    with _held_ports(len(names) + 1) as held:
        addresses = {name: f"127.0.0.1:{sock.getsockname()[1]}" for name, sock in zip(names, held, strict=False)}
        # Temporal and the Clerk Backend API are not part of this suite: their address is a
        # port bound here and never listening, so a call to them fails fast and retryably.
        unreachable = f"127.0.0.1:{held[-1].getsockname()[1]}"
        peers = {f"{name.value}_addr": addr for name, addr in addresses.items()}
        try:
            for name in names:
                settings = settings_for(
                    name,
                    **peers,
                    temporal_address=unreachable,
                    clerk_api_url=f"http://{unreachable}/v1",
                    principal_cache_ttl_s=PRINCIPAL_CACHE_TTL_S,
                    log_level="CRITICAL",
                )
                server = await build_server_of(name)(settings)  # type: ignore[misc]
                assert isinstance(server, GrpcServer)
                servers.append(server)
                port = int(addresses[name].rsplit(":", 1)[1])
                held[names.index(name)].close()  # hand the port over to the server
                await server.start(port)
            member_id = add_user(db, MEMBER_SUBJECT, email="member@example.com", name="Member", role="member")
            admin_id = add_user(db, ADMIN_SUBJECT, email="boss@example.com", name="Boss", role="admin")
            add_user(db, INACTIVE_SUBJECT, email="gone@example.com", name="Gone", status="inactive")
            right, wrong = _credentials(issuer)
            modes = method_auth_modes(service_descriptor(n) for n in names)
            pool = IdPool()
            pool.add(ids.USER.format(member_id))
            pool.add(ids.USER.format(admin_id))
            stack = HostileStack(db, addresses, modes, right, wrong, pool, member_id, admin_id)
            yield stack
        finally:
            for server in reversed(servers):
                await server.stop(0)


def seed(stack: HostileStack) -> None:
    """A few real rows of every kind (run in the worker thread), so that generated requests
    also carry ids that exist and reach the rules behind the lookups."""
    member = stack.right[AuthMode.USER][0].metadata
    admin = stack.right[AuthMode.ADMIN][0].metadata
    key = service(SERVICE_KEY)

    def call(name: ServiceName, method: str, request: object, metadata: tuple[tuple[str, str], ...]) -> None:
        descriptor = service_descriptor(name)
        output = descriptor.methods_by_name[method].output_type
        rpc: Any = stack.channel(name).unary_unary(f"/{descriptor.full_name}/{method}")
        try:
            raw = rpc(request.SerializeToString(), metadata=metadata, timeout=10)  # type: ignore[attr-defined]
        except grpc.RpcError as e:
            # A well-formed request refused: a regression of its own, named as such.
            raise AssertionError(f"seeding {name.value}.{method} failed: {e}") from e
        stack.pool.harvest(output, raw)

    call(ServiceName.IDENTITY, "CreateContact", idn.CreateContactRequest(phone="14155550100", name="Seed", is_allowed=True), key)
    for metadata in (member, admin):
        call(ServiceName.MESSAGES, "CreateConversation", ms.CreateConversationRequest(title="seed"), metadata)
    conversation = stack.pool.first(ids.CONVERSATION)
    call(ServiceName.MESSAGES, "SendMessage", ms.SendMessageRequest(conversation_id=conversation, content="hello"), member)
    call(ServiceName.MESSAGES, "CreatePlaceholder", ms.CreatePlaceholderRequest(conversation_id=conversation), key)
    call(ServiceName.AGENT_QUEUE, "CreateAgent", aq.CreateAgentRequest(name="seed-agent", system_prompt="be kind", enabled=True), admin)
    call(ServiceName.AGENT_QUEUE, "CreateSkill", aq.CreateSkillRequest(name="seed-skill", description="d", enabled=True), member)
    call(
        ServiceName.AGENT_QUEUE,
        "CreateScheduledTask",
        aq.CreateScheduledTaskRequest(
            name="seed-task", interval=duration_pb2.Duration(seconds=3600), payload="ping", enabled=False,
            conversation_id=conversation,
        ),
        key,
    )
    tool_input = struct_pb2.Value(struct_value=struct_pb2.Struct(fields={"q": struct_pb2.Value(string_value="x")}))
    call(
        ServiceName.APPROVALS,
        "CreateApproval",
        ap.CreateApprovalRequest(
            conversation_id=conversation,
            job_id=ids.JOB.format(ids.JOB.new()),
            tool_name="search",
            tool_input=tool_input,
            channel=types_pb2.CHANNEL_WEB,
            conversation_user_id=ids.USER.format(stack.member_id),
        ),
        key,
    )
    message = stack.pool.first(ids.MESSAGE)
    call(
        ServiceName.DELIVERY,
        "EnqueueOutbound",
        dl.EnqueueOutboundRequest(
            channel=types_pb2.CHANNEL_WHATSAPP, conversation_id=conversation, message_id=message, to="14155550100", content="hi"
        ),
        key,
    )
    # A webhook endpoint (a public IP literal: no DNS), an event fanned out to it, and its log
    # (which carries the delivery's whd_ id).
    call(
        ServiceName.DELIVERY,
        "CreateWebhookEndpoint",
        dl.CreateWebhookEndpointRequest(url="https://93.184.216.34/hooks", event_types=[dl.WEBHOOK_EVENT_TYPE_JOB_COMPLETED]),
        member,
    )
    call(
        ServiceName.DELIVERY,
        "PublishWebhookEvent",
        dl.PublishWebhookEventRequest(
            event_id="job.completed:seed", type=dl.WEBHOOK_EVENT_TYPE_JOB_COMPLETED,
            occur_time=timestamp_pb2.Timestamp(seconds=1_800_000_000), owner_user_id=ids.USER.format(stack.member_id),
        ),
        key,
    )
    endpoint = stack.pool.first(ids.WEBHOOK_ENDPOINT)
    call(ServiceName.DELIVERY, "ListWebhookDeliveries", dl.ListWebhookDeliveriesRequest(endpoint_id=endpoint), member)
