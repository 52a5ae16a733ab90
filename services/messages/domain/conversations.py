"""Conversations: channels, ownership, archiving, get-or-create owners, batch and history
limits, and the change-feed keys of their watchers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from zenthor.auth.principal import ResolvedUser
from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import optional_text

# Contract limits (messages.proto); every one is INVALID_ARGUMENT naming its field.
MAX_CONVERSATION_TITLE = 200
MAX_BATCH_IDS = 500
MAX_HISTORY_MESSAGES = 10_000
# ListConversations page sizes as the contract documents them.
CONVERSATIONS_PAGE = PageLimits(default=100, maximum=500)


class Channel(StrEnum):
    WEB = "web"
    WHATSAPP = "whatsapp"


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class DoubleTexting(StrEnum):
    """What a message sent while the agent is busy with its conversation (a job of it pending or
    processing) does; docs/double-texting.md draws each."""

    # Queued behind the running reply (the original's behaviour).
    ENQUEUE = "enqueue"
    # Refused (FAILED_PRECONDITION), nothing written.
    REJECT = "reject"
    # The conversation's running and queued jobs are cancelled; the new message runs next.
    INTERRUPT = "interrupt"
    # INTERRUPT, and the interrupted run's partial reply is deleted.
    ROLLBACK = "rollback"

    @property
    def cancels(self) -> bool:
        return self in (DoubleTexting.INTERRUPT, DoubleTexting.ROLLBACK)


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
    double_texting: DoubleTexting = DoubleTexting.ENQUEUE

    def owned_by(self, user: ResolvedUser) -> bool:
        """The kit's one ownership rule (docs/architecture.md §4): the conversation carries the
        caller's user id, or their linked contact's id (WhatsApp)."""
        return user.owns(user_id=self.user_id, contact_id=self.contact_id)


def owned(conversation: Conversation | None, user: ResolvedUser) -> Conversation | None:
    """The conversation when it is the caller's; None when missing or not theirs (the two look
    the same to the caller)."""
    return conversation if conversation is not None and conversation.owned_by(user) else None


def can_archive(conversation: Conversation) -> bool:
    """Only web conversations are archived; WhatsApp ones stay active for good."""
    return conversation.channel is Channel.WEB


def check_channel(value: Channel | None, field: str = "channel") -> Channel:
    if value is None:
        raise InvalidArgument(field, "must be CHANNEL_WEB or CHANNEL_WHATSAPP")
    return value


def check_double_texting(value: DoubleTexting | None, field: str = "double_texting") -> DoubleTexting:
    """A conversation's setting: one of the four strategies (UNSPECIFIED is not one)."""
    if value is None:
        raise InvalidArgument(field, "must be ENQUEUE, REJECT, INTERRUPT or ROLLBACK")
    return value


def busy_refusal() -> str:
    """The FAILED_PRECONDITION message of a REJECT send (HTTP 409 through the gateway)."""
    return "the agent is still answering this conversation (double texting: reject)"


def check_title(value: str | None, field: str = "title") -> str | None:
    return optional_text(value, field, max_chars=MAX_CONVERSATION_TITLE)


def getorcreate_owner(channel: Channel, user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> uuid.UUID:
    """The owner id a get-or-create looks up by: the user for web, the contact for WhatsApp
    (the error text is the original backend's)."""
    owner = user_id if channel is Channel.WEB else contact_id
    if owner is None:
        raise InvalidArgument(
            "user_id" if channel is Channel.WEB else "contact_id",
            "Must provide userId for web or contactId for whatsapp",
        )
    return owner


def check_batch_ids(count: int, field: str = "ids") -> None:
    if count > MAX_BATCH_IDS:
        raise InvalidArgument(field, f"must hold at most {MAX_BATCH_IDS} ids")


def check_max_messages(value: int, field: str = "max_messages") -> int | None:
    """0 means every message (as the original backend); None is returned for it."""
    if value < 0 or value > MAX_HISTORY_MESSAGES:
        raise InvalidArgument(field, f"must be between 0 and {MAX_HISTORY_MESSAGES}")
    return value or None


# --- change-feed keys (zenthor.notify): who must re-read after a write ---


def owner_keys(user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> tuple[str, ...]:
    """Conversation-list watchers listen under their user id and their linked contact id."""
    keys = []
    if user_id is not None:
        keys.append(f"u{user_id.hex}")
    if contact_id is not None:
        keys.append(f"c{contact_id.hex}")
    return tuple(keys)
