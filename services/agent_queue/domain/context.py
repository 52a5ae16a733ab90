"""The conversation context the runtime loads for one job: the records this service reads
from its peers (the conversation and its history from messages, the user and the contact
from identity) as plain values, and the context composed from them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

from services.agent_queue.domain.agents import Agent
from services.agent_queue.domain.skills import Skill
from zenthor.auth.principal import Role, UserStatus
from zenthor.errors import InvalidArgument

# Any JSON document (a tool call's arguments and result).
JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


class Channel(StrEnum):
    WEB = "web"
    WHATSAPP = "whatsapp"


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


# An enum a peer left unspecified is None in every record below.


@dataclass(frozen=True)
class Conversation:
    id: uuid.UUID
    created_at: datetime
    channel: Channel | None
    user_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    title: str | None
    status: ConversationStatus | None


@dataclass(frozen=True)
class ToolCall:
    """One tool invocation; `has_output` tells an absent output from a JSON null."""

    name: str
    input: JsonValue
    output: JsonValue = None
    has_output: bool = False


@dataclass(frozen=True)
class ConversationMessage:
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    conversation_id: uuid.UUID
    role: MessageRole | None
    content: str
    channel: Channel | None
    tool_calls: tuple[ToolCall, ...]
    streaming: bool
    status: MessageStatus | None


@dataclass(frozen=True)
class History:
    """A conversation and its messages, oldest first."""

    conversation: Conversation
    messages: tuple[ConversationMessage, ...]


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    external_id: str
    name: str
    email: str
    # The stored role; None when none is stored (the effective one is derived at sign-in).
    role: Role | None
    email_verified: bool | None
    image: str | None
    phone: str | None
    status: UserStatus | None


@dataclass(frozen=True)
class Contact:
    id: uuid.UUID
    created_at: datetime
    phone: str
    name: str
    is_allowed: bool
    # The web user this contact is linked to by phone verification.
    user_id: uuid.UUID | None


@dataclass(frozen=True)
class ConversationContext:
    conversation: Conversation
    user: User | None
    contact: Contact | None
    messages: tuple[ConversationMessage, ...]
    skills: list[Skill]
    agent: Agent | None


def check_max_messages(value: int, field: str = "max_messages") -> int:
    """How many of the latest messages to load; 0 loads them all."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative (0 means all)")
    return value
