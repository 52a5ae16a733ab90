"""Messages rules as plain values and functions: ownership, the auto-title, input limits, and
what each message state allows. No I/O; time comes in as `now` where needed."""

from __future__ import annotations

import base64
import binascii
import json
import math
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from zenthor.auth.principal import ResolvedUser
from zenthor.errors import FailedPrecondition, InvalidArgument
from zenthor.validate import optional_text, required_text

# Contract limits (messages.proto); every one is INVALID_ARGUMENT naming its field.
MAX_CONTENT = 100_000  # Unicode code points (Python `len`), not UTF-16 units
MAX_CONVERSATION_TITLE = 200
MAX_TOOL_CALLS = 100
MAX_TOOL_NAME = 200
MAX_CHANNEL_MESSAGE_ID = 256
MAX_ACCOUNT_ID = 256
MAX_IDEMPOTENCY_KEY = 256
MAX_BATCH_IDS = 500
MAX_HISTORY_MESSAGES = 10_000
EMBEDDING_DIMENSIONS = 1536  # text-embedding-3-small, the runtime's default model (spec §1.4)
DEFAULT_SEARCH_LIMIT = 5  # spec memories.search
MAX_SEARCH_LIMIT = 256  # spec memories.search: the platform's 1..256
DEFAULT_TITLE = "New chat"  # spec conversations.create
TITLE_MAX_CHARS = 50  # spec: title auto-generation
ELLIPSIS = "\u2026"


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


class MemorySource(StrEnum):
    CONVERSATION = "conversation"
    MANUAL = "manual"


@dataclass(frozen=True)
class Conversation:
    id: uuid.UUID
    channel: Channel
    user_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    title: str | None
    status: ConversationStatus
    created_at: datetime
    updated_at: datetime
    # Change counter of the conversation and its messages (WatchConversation positions);
    # `meta_revision` is the revision of the last title/status change.
    revision: int
    meta_revision: int


@dataclass(frozen=True)
class ToolCall:
    """One tool invocation; `input`/`output` are any JSON. `has_output` tells an absent
    output from a JSON null."""

    name: str
    input: Any
    output: Any = None
    has_output: bool = False


@dataclass(frozen=True)
class Message:
    id: uuid.UUID
    conversation_id: uuid.UUID
    role: MessageRole
    content: str
    channel: Channel
    tool_calls: tuple[ToolCall, ...]
    streaming: bool
    status: MessageStatus
    created_at: datetime
    updated_at: datetime
    revision: int
    # Last applied UpdateStreamingContent sequence (0: none or unsequenced).
    sequence: int


@dataclass(frozen=True)
class RecentConversation:
    conversation: Conversation
    last_message: Message | None
    # When the conversation last had activity: its last message, else its creation.
    activity_at: datetime
    # 0 for the caller's own (web) conversations, 1 for those of the linked contact: the
    # spec's tie order (web first).
    part: int


@dataclass(frozen=True)
class Memory:
    id: uuid.UUID
    conversation_id: uuid.UUID | None
    content: str
    source: MemorySource
    created_at: datetime
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class MemoryHit:
    """A search result; the score was computed on this very row (finding 23)."""

    memory: Memory
    score: float


# --- ownership (spec README §4.8, without a per-request call to identity) ---


def owns(conversation: Conversation, user: ResolvedUser) -> bool:
    """The caller owns a conversation that carries their user id, or their linked contact's
    id (WhatsApp). Missing ids never match."""
    if conversation.user_id is not None and conversation.user_id == user.user_id:
        return True
    return (
        conversation.contact_id is not None
        and user.contact_id is not None
        and conversation.contact_id == user.contact_id
    )


def owned(conversation: Conversation | None, user: ResolvedUser) -> Conversation | None:
    return conversation if conversation is not None and owns(conversation, user) else None


def can_archive(conversation: Conversation) -> bool:
    """spec conversations.archive: WhatsApp conversations are never archived."""
    return conversation.channel is Channel.WEB


# --- auto-title (spec "Title auto-generation", fixed for finding 29) ---
#
# Rule: while the title is absent, empty or exactly "New chat", a user message sets it to the
# message content when that has at most 50 Unicode code points; otherwise to its first 50 code
# points followed by "…". The cut never splits a user-perceived character: it moves back to the
# previous grapheme-cluster boundary (a simplified UAX #29: combining and spacing marks,
# variation selectors, emoji modifiers, zero-width joiner sequences, emoji tag sequences,
# keycaps, regional-indicator flag pairs, Hangul jamo and CR LF stay whole). The original counted
# UTF-16 units and could cut an emoji in half.

_ZWJ = "\u200d"


def _is_extender(ch: str) -> bool:
    """Joins the previous character into one cluster (never cut before it)."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")  # marks, VS16, keycap U+20E3
        or ch == _ZWJ
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (subdivision flags)
        or 0x1160 <= cp <= 0x11FF  # Hangul V/T jamo
        or 0xD7B0 <= cp <= 0xD7FF
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_boundary(text: str, i: int) -> bool:
    """Whether a cut between text[i-1] and text[i] keeps every cluster whole."""
    if i <= 0 or i >= len(text):
        return True
    before, at = text[i - 1], text[i]
    if _is_extender(at) or before == _ZWJ or (before, at) == ("\r", "\n"):
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(at):
        run = 0
        while i - 1 - run >= 0 and _is_regional_indicator(text[i - 1 - run]):
            run += 1
        return run % 2 == 0  # an odd run means `at` completes a flag
    return True


def title_from(content: str) -> str:
    if len(content) <= TITLE_MAX_CHARS:
        return content
    cut = TITLE_MAX_CHARS
    while cut > 0 and not _is_boundary(content, cut):
        cut -= 1
    if cut == 0:  # one cluster longer than the limit: keep it whole rather than nothing
        cut = TITLE_MAX_CHARS
        while not _is_boundary(content, cut):
            cut += 1
    return content[:cut] + ELLIPSIS


def auto_title(current: str | None, content: str) -> str | None:
    """The new title a user message gives the conversation, or None to leave it."""
    if current not in (None, "", DEFAULT_TITLE):
        return None
    return title_from(content)


# --- message state rules (findings 11, 27, 28) ---


def is_open_placeholder(message: Message) -> bool:
    return message.role is MessageRole.ASSISTANT and message.streaming


def refuse_streaming_change(message: Message, operation: str) -> FailedPrecondition:
    """Why `operation` may not touch `message`: only open assistant placeholders stream."""
    if message.role is not MessageRole.ASSISTANT:
        return FailedPrecondition(f"{operation}: message is a {message.role.value} message, not an assistant placeholder")
    if message.status is MessageStatus.FAILED:
        return FailedPrecondition(f"{operation}: placeholder already failed")
    return FailedPrecondition(f"{operation}: message is finalized and can no longer change")


DELIVERY_OUTCOMES = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED})


def refuse_delivery_outcome(message: Message, outcome: MessageStatus) -> FailedPrecondition:
    if message.streaming:
        return FailedPrecondition("message is still streaming")
    return FailedPrecondition(f"message is already {message.status.value}; cannot mark it {outcome.value}")


# --- input checks ---


def check_content(value: str, field: str = "content") -> str:
    """Message content: 1..100 000 code points, not blank, no NUL."""
    return required_text(value, field, max_chars=MAX_CONTENT)


def check_optional_content(value: str, field: str = "content") -> str:
    """Streaming and final content may be empty."""
    return optional_text(value, field, max_chars=MAX_CONTENT) or ""


def check_title(value: str | None, field: str = "title") -> str | None:
    return optional_text(value, field, max_chars=MAX_CONVERSATION_TITLE)


def check_tool_calls(calls: Sequence[ToolCall], field: str = "tool_calls") -> tuple[ToolCall, ...]:
    if len(calls) > MAX_TOOL_CALLS:
        raise InvalidArgument(field, f"must hold at most {MAX_TOOL_CALLS} tool calls")
    for i, call in enumerate(calls):
        required_text(call.name, f"{field}[{i}].name", max_chars=MAX_TOOL_NAME)
    return tuple(calls)


def check_sequence(value: int, field: str = "sequence") -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def check_embedding(values: Sequence[float], field: str = "embedding") -> tuple[float, ...]:
    if len(values) != EMBEDDING_DIMENSIONS:
        raise InvalidArgument(field, f"must have exactly {EMBEDDING_DIMENSIONS} dimensions, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument(field, "must hold finite numbers only")
    if not any(values):
        raise InvalidArgument(field, "must not be the zero vector (cosine similarity is undefined)")
    return tuple(values)


def check_search_limit(value: int, field: str = "limit") -> int:
    if value < 0 or value > MAX_SEARCH_LIMIT:
        raise InvalidArgument(field, f"must be between 1 and {MAX_SEARCH_LIMIT} (0 means {DEFAULT_SEARCH_LIMIT})")
    return value or DEFAULT_SEARCH_LIMIT


def check_channel_message_id(value: str, field: str = "channel_message_id") -> str:
    return required_text(value, field, max_chars=MAX_CHANNEL_MESSAGE_ID)


def check_account_id(value: str, field: str = "account_id") -> str | None:
    """Empty is its own key value (stored as NULL; the unique key treats NULLs as equal)."""
    return optional_text(value, field, max_chars=MAX_ACCOUNT_ID) or None


def check_idempotency_key(value: str, field: str = "idempotency_key") -> str | None:
    return optional_text(value, field, max_chars=MAX_IDEMPOTENCY_KEY) or None


def check_max_messages(value: int, field: str = "max_messages") -> int | None:
    """0 means every message (spec parity); None is returned for it."""
    if value < 0 or value > MAX_HISTORY_MESSAGES:
        raise InvalidArgument(field, f"must be between 0 and {MAX_HISTORY_MESSAGES}")
    return value or None


def check_page_size(value: int, field: str, *, default: int, maximum: int) -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return value or default


def getorcreate_owner(channel: Channel, user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> uuid.UUID:
    """The owner id a get-or-create looks up by; spec conversations.getOrCreate's error text."""
    owner = user_id if channel is Channel.WEB else contact_id
    if owner is None:
        raise InvalidArgument(
            "user_id" if channel is Channel.WEB else "contact_id",
            "Must provide userId for web or contactId for whatsapp",
        )
    return owner


# --- opaque tokens (watch positions, the recent-list cursor) ---


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str, field: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument(field, "is not a token this service issued") from e
    if not isinstance(data, dict):
        raise InvalidArgument(field, "is not a token this service issued")
    return data


@dataclass(frozen=True)
class WatchPosition:
    """Everything of `conversation_id` up to `revision` has been sent."""

    conversation_id: uuid.UUID
    revision: int

    def encode(self) -> str:
        return _encode({"c": self.conversation_id.hex, "r": self.revision})

    @staticmethod
    def decode(token: str, conversation_id: uuid.UUID, field: str = "resume_position") -> WatchPosition | None:
        if not token:
            return None
        data = _decode(token, field)
        try:
            position = WatchPosition(uuid.UUID(hex=data["c"]), int(data["r"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(field, "is not a token this service issued") from e
        if position.conversation_id != conversation_id or position.revision < 0:
            raise InvalidArgument(field, "belongs to another conversation")
        return position


@dataclass(frozen=True)
class RecentCursor:
    """Keyset position in the recent list: (activity desc, part, id)."""

    activity_at: datetime
    part: int
    conversation_id: uuid.UUID

    def encode(self) -> str:
        return _encode({"t": self.activity_at.isoformat(), "p": self.part, "c": self.conversation_id.hex})

    @staticmethod
    def decode(token: str, field: str = "page_token") -> RecentCursor | None:
        if not token:
            return None
        data = _decode(token, field)
        try:
            return RecentCursor(datetime.fromisoformat(data["t"]), int(data["p"]), uuid.UUID(hex=data["c"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(field, "is not a token this service issued") from e


# --- change-feed keys (zenthor.notify): who must re-read after a write ---


def owner_keys(user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> tuple[str, ...]:
    """Conversation-list watchers listen under their user id and their linked contact id."""
    keys = []
    if user_id is not None:
        keys.append(f"u{user_id.hex}")
    if contact_id is not None:
        keys.append(f"c{contact_id.hex}")
    return tuple(keys)
