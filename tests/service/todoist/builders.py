"""Rows and calls the todoist scenarios start from."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.fernet import Fernet

from services.todoist.domain.tokens import key_id
from tests.service.todoist.conftest import TOKEN_KEY, TodoistStack, alice_user
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from zenthor import ids
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb


def add_state(
    db: TestDatabase, user_id: uuid.UUID, *, created_at: datetime, status: str = "open", ttl: timedelta = timedelta(minutes=10)
) -> str:
    state = f"todoist_{uuid.uuid4()}"
    db.sql(
        "INSERT INTO todoist.oauth_states (state, user_id, status, created_at, expires_at, claimed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (state, user_id, status, created_at, created_at + ttl, created_at if status in ("claimed", "exchanged") else None),
    )
    return state


def connect(db: TestDatabase, user_id: uuid.UUID, token: str, *, key: str = TOKEN_KEY, now: datetime) -> uuid.UUID:
    """A stored connection, sealed the way the service seals it."""
    connection_id = ids.TODOIST_CONNECTION.new()
    db.sql(
        "INSERT INTO todoist.connections (id, user_id, token_ciphertext, token_key_id, token_type, scope,"
        " account_email, account_name, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, 'Bearer', 'data:read_write', 'alice@todo.com', 'Alice T', %s, %s)",
        (connection_id, user_id, Fernet(key.encode()).encrypt(token.encode()).decode(), key_id(key), now, now),
    )
    return connection_id


def states(db: TestDatabase) -> list[tuple[Any, ...]]:
    return db.sql("SELECT state, user_id, status, created_at, expires_at FROM todoist.oauth_states ORDER BY created_at")


def connection_row(db: TestDatabase, user_id: uuid.UUID) -> dict[str, Any] | None:
    rows = db.sql(
        "SELECT token_ciphertext, token_key_id, token_type, scope, account_email, account_name, created_at, updated_at"
        " FROM todoist.connections WHERE user_id = %s",
        (user_id,),
    )
    if not rows:
        return None
    names = ("token_ciphertext", "token_key_id", "token_type", "scope", "account_email", "account_name", "created_at", "updated_at")
    return dict(zip(names, rows[0], strict=True))


async def start_oauth(stack: TodoistStack, user: Any = None) -> pb.StartTodoistOAuthResponse:
    reply: pb.StartTodoistOAuthResponse = await stack.stub.StartTodoistOAuth(
        pb.StartTodoistOAuthRequest(), metadata=alice_user(stack.issuer) if user is None else user
    )
    return reply


def state_of(started: pb.StartTodoistOAuthResponse) -> str:
    return parse_qs(urlsplit(started.authorization_url).query)["state"][0]


async def complete_oauth(stack: TodoistStack, code: str, state: str, user: Any = None) -> pb.CompleteTodoistOAuthResponse:
    reply: pb.CompleteTodoistOAuthResponse = await stack.stub.CompleteTodoistOAuth(
        pb.CompleteTodoistOAuthRequest(code=code, state=state), metadata=alice_user(stack.issuer) if user is None else user
    )
    return reply


async def callback(stack: TodoistStack, state: str, code: str | None = None, error: str | None = None) -> pb.SubmitTodoistOAuthCallbackResponse:
    reply: pb.SubmitTodoistOAuthCallbackResponse = await stack.stub.SubmitTodoistOAuthCallback(
        pb.SubmitTodoistOAuthCallbackRequest(state=state, code=code, error=error), metadata=service(), timeout=30
    )
    return reply


async def status(stack: TodoistStack, user: Any = None) -> pb.TodoistConnectionStatus:
    reply = await stack.stub.GetTodoistConnectionStatus(
        pb.GetTodoistConnectionStatusRequest(), metadata=alice_user(stack.issuer) if user is None else user
    )
    return reply.status
