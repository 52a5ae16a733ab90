"""The principal cache never outlives a change (docs/hardening.md #22): across real services, a
deactivated user is refused on their very next call and a role identity grants applies on the
next call, with a cache TTL far longer than the test; "user not found" is never cached; and the
one listening connection per process reconnects with backoff, trusting cached answers only
briefly while it is down (zenthor.auth.resolver)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import psycopg
import pytest

from services.identity.app import build_server as build_identity
from services.messages.app import build_server as build_messages
from tests.service.conftest import Running, start, stop
from tests.support.builders import add_user
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.waiting import eventually
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.auth.resolver import PRINCIPAL_CHANGES, UNFOLLOWED_TTL_S, CachingResolver
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as identity_pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as messages_pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc

# Far longer than any test: only an eviction can explain a fresh answer.
LONG_TTL_S = 3_600.0


@asynccontextmanager
async def identity_and_messages(
    settings_for: Any, db: TestDatabase, issuer: FakeClerkIssuer
) -> AsyncIterator[tuple[Running, Running]]:
    """Both services as their processes run them, each with its own principal cache."""
    identity_settings = settings_for(ServiceName.IDENTITY, principal_cache_ttl_s=LONG_TTL_S)
    identity = await start(
        await build_identity(identity_settings), identity_pb2_grpc.IdentityServiceStub, identity_settings, db, issuer
    )
    messages_settings = settings_for(
        ServiceName.MESSAGES,
        principal_cache_ttl_s=LONG_TTL_S,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{free_port()}",  # nothing listens: the job outbox just waits
    )
    messages = await start(
        await build_messages(messages_settings), messages_pb2_grpc.MessagesServiceStub, messages_settings, db, issuer
    )
    try:
        yield identity, messages
    finally:
        await stop(messages)
        await stop(identity)


@pytest.fixture
async def services(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> AsyncIterator[tuple[Running, Running]]:
    async with identity_and_messages(settings_for, db, clerk_issuer) as running:
        yield running


async def test_a_deactivated_user_is_refused_on_the_very_next_send(services: tuple[Running, Running]) -> None:
    identity, messages = services
    # Ten users, each: a send that fills the cache, deactivation, the next send at once.
    for i in range(10):
        add_user(identity.db, f"user_{i}", email=f"u{i}@example.com")
        caller = bearer(identity.issuer.token(f"user_{i}"))
        conversation = (await messages.stub.CreateConversation(messages_pb.CreateConversationRequest(), metadata=caller)).conversation
        send = messages_pb.SendMessageRequest(conversation_id=conversation.id, content="hello")
        await messages.stub.SendMessage(send, metadata=caller)
        await identity.stub.DeactivateClerkUser(
            identity_pb.DeactivateClerkUserRequest(external_id=f"user_{i}"), metadata=service()
        )
        refused = await rpc_error(messages.stub.SendMessage(send, metadata=caller))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED, i
        # identity's own cache follows the same change.
        own = await rpc_error(identity.stub.GetCurrentUser(identity_pb.GetCurrentUserRequest(), metadata=caller))
        assert own.code() == grpc.StatusCode.PERMISSION_DENIED, i
    assert messages.db.sql("SELECT count(*) FROM messages.messages") == [(10,)]


async def test_a_user_created_right_after_a_failed_lookup_is_resolved_at_once(services: tuple[Running, Running]) -> None:
    identity, messages = services
    caller = bearer(identity.issuer.token("user_new", email="new@example.com", email_verified=True))
    request = messages_pb.CreateConversationRequest()
    unknown = await rpc_error(messages.stub.CreateConversation(request, metadata=caller))
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    unknown_here = await rpc_error(identity.stub.GetCurrentUser(identity_pb.GetCurrentUserRequest(), metadata=caller))
    assert unknown_here.code() == grpc.StatusCode.UNAUTHENTICATED
    await identity.stub.GetOrCreateUserFromClerk(identity_pb.GetOrCreateUserFromClerkRequest(name="New"), metadata=caller)
    await messages.stub.CreateConversation(request, metadata=caller)
    await identity.stub.GetCurrentUser(identity_pb.GetCurrentUserRequest(), metadata=caller)


async def test_an_admin_role_granted_by_clerk_applies_on_the_next_call(services: tuple[Running, Running]) -> None:
    identity, _ = services
    unverified = identity_pb.UpsertClerkUserRequest(external_id="user_ops", name="Ops", email="ops@example.com")
    await identity.stub.UpsertClerkUser(unverified, metadata=service())
    caller = bearer(identity.issuer.token("user_ops"))
    denied = await rpc_error(identity.stub.ListUsers(identity_pb.ListUsersRequest(), metadata=caller))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    unverified.email_verified = True
    await identity.stub.UpsertClerkUser(unverified, metadata=service())
    await identity.stub.ListUsers(identity_pb.ListUsersRequest(), metadata=caller)


# --- the cache and its listener, against the real database ---


class Directory:
    """A principal resolver over a dict, counting lookups: the kit's cache is under test here."""

    def __init__(self) -> None:
        self.users: dict[str, ResolvedUser] = {}
        self.lookups = 0

    async def resolve(self, external_id: str) -> ResolvedUser | None:
        self.lookups += 1
        return self.users.get(external_id)

    def add(self, external_id: str, status: UserStatus = UserStatus.ACTIVE) -> None:
        self.users[external_id] = ResolvedUser(uuid.uuid4(), Role.MEMBER, status, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def allow_connections(db: TestDatabase, allowed: bool, *, terminate_pid: int | None = None) -> None:
    """As an operator on the maintenance database (a closed database admits nobody)."""
    with psycopg.connect(db.pg.admin_dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if terminate_pid is not None:
            conn.execute("SELECT pg_terminate_backend(%s)", (terminate_pid,))


@pytest.fixture
async def cache(db: TestDatabase) -> AsyncIterator[tuple[CachingResolver, Directory, Clock]]:
    directory, clock = Directory(), Clock()
    resolver = CachingResolver(directory, LONG_TTL_S, changes_dsn=db.dsn_for(ServiceName.MESSAGES), clock=clock)
    await resolver.start()
    yield resolver, directory, clock
    await resolver.stop()


async def test_user_not_found_is_never_cached(cache: tuple[CachingResolver, Directory, Clock]) -> None:
    resolver, directory, _ = cache
    assert await resolver.resolve("user_a") is None
    directory.add("user_a")
    assert await resolver.resolve("user_a") == directory.users["user_a"]


async def test_a_followed_answer_is_kept_until_a_change_evicts_it(
    db: TestDatabase, cache: tuple[CachingResolver, Directory, Clock]
) -> None:
    resolver, directory, clock = cache
    directory.add("user_a")
    await resolver.resolve("user_a")
    clock.now += LONG_TTL_S / 2
    await resolver.resolve("user_a")
    assert directory.lookups == 1
    directory.add("user_a", UserStatus.INACTIVE)
    db.sql("SELECT pg_notify(%s, %s)", (PRINCIPAL_CHANGES, "user_a"))
    assert (await resolver.resolve("user_a")).status is UserStatus.INACTIVE  # type: ignore[union-attr]


async def test_while_the_listener_is_down_answers_are_trusted_briefly_and_it_reconnects(
    db: TestDatabase, cache: tuple[CachingResolver, Directory, Clock]
) -> None:
    resolver, directory, clock = cache
    changes = resolver.changes
    assert changes is not None and changes.following
    directory.add("user_a")
    await resolver.resolve("user_a")
    # The database stops taking connections and drops the listener's.
    allow_connections(db, False, terminate_pid=changes.backend_pid)
    await eventually(lambda: not changes.following)
    clock.now += UNFOLLOWED_TTL_S / 2
    await resolver.resolve("user_a")
    assert directory.lookups == 1  # still within the short TTL
    clock.now += UNFOLLOWED_TTL_S
    await resolver.resolve("user_a")
    assert directory.lookups == 2  # past it: asked again, although the TTL is an hour
    # Back up: the listener reconnects by itself and forgets what it may have missed.
    first_pid = changes.backend_pid
    allow_connections(db, True)
    await eventually(lambda: changes.following and changes.backend_pid != first_pid)
    await resolver.resolve("user_a")
    assert directory.lookups == 3
    await resolver.resolve("user_a")
    assert directory.lookups == 3  # followed again: cached for the long TTL
    directory.add("user_a", UserStatus.INACTIVE)
    db.sql("SELECT pg_notify(%s, %s)", (PRINCIPAL_CHANGES, "user_a"))
    assert (await resolver.resolve("user_a")).status is UserStatus.INACTIVE  # type: ignore[union-attr]


async def test_a_change_during_a_lookup_is_not_cached_stale(
    db: TestDatabase, cache: tuple[CachingResolver, Directory, Clock]
) -> None:
    resolver, directory, _ = cache
    directory.add("user_a")
    read = asyncio.Event()
    changed = asyncio.Event()
    inner = directory.resolve

    async def slow_resolve(external_id: str) -> ResolvedUser | None:
        answer = await inner(external_id)  # read before the change commits ...
        read.set()
        await changed.wait()  # ... answered after it
        return answer

    directory.resolve = slow_resolve  # type: ignore[method-assign]
    lookup = asyncio.create_task(resolver.resolve("user_a"))
    await asyncio.wait_for(read.wait(), 30)
    directory.add("user_a", UserStatus.INACTIVE)
    db.sql("SELECT pg_notify(%s, %s)", (PRINCIPAL_CHANGES, "user_a"))
    assert resolver.changes is not None and await resolver.changes.barrier()  # the change is in
    changed.set()
    assert (await asyncio.wait_for(lookup, 30)).status is UserStatus.ACTIVE  # type: ignore[union-attr]
    directory.resolve = inner  # type: ignore[method-assign]
    assert (await resolver.resolve("user_a")).status is UserStatus.INACTIVE  # type: ignore[union-attr]
