"""The recent-conversations list (ListRecentConversations, WatchConversationList): its rows,
its keyset cursor and its page sizes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.messages.domain.conversations import Conversation
from services.messages.domain.messages import Message
from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits, check_size, decode_token, encode_token

# ListRecentConversations and WatchConversationList page sizes as the contract documents them.
RECENT_PAGE = PageLimits(default=50, maximum=200)
# The two parts of the list, in their tie order: the caller's own (web) conversations first,
# then those of the linked contact (WhatsApp).
OWN_PART, CONTACT_PART = 0, 1


@dataclass(frozen=True)
class RecentConversation:
    conversation: Conversation
    last_message: Message | None
    # When the conversation last had activity: its last message, else its creation.
    activity_at: datetime
    # OWN_PART or CONTACT_PART.
    part: int


_CURSOR_FIELDS: dict[str, type[str] | type[int]] = {"t": str, "p": int, "c": str}


@dataclass(frozen=True)
class RecentCursor:
    """Keyset position in the recent list: (activity desc, part, id)."""

    activity_at: datetime
    part: int
    conversation_id: uuid.UUID

    @staticmethod
    def after(row: RecentConversation) -> RecentCursor:
        return RecentCursor(row.activity_at, row.part, row.conversation.id)

    def encode(self) -> str:
        return encode_token({"t": self.activity_at.isoformat(), "p": self.part, "c": self.conversation_id.hex})

    @staticmethod
    def decode(token: str, field: str = "page_token") -> RecentCursor | None:
        fields = decode_token(token, _CURSOR_FIELDS, field=field)
        if fields is None:
            return None
        try:
            cursor = RecentCursor(
                datetime.fromisoformat(str(fields["t"])), int(fields["p"]), uuid.UUID(hex=str(fields["c"]))
            )
        except ValueError as e:
            raise InvalidArgument(field, "is not a token this service issued") from e
        if cursor.activity_at.tzinfo is None or cursor.part not in (OWN_PART, CONTACT_PART):
            raise InvalidArgument(field, "is not a token this service issued")
        return cursor


@dataclass(frozen=True)
class RecentPageRequest:
    """A validated page of the recent list."""

    size: int
    after: RecentCursor | None


def recent_page_request(page_size: int, page_token: str) -> RecentPageRequest:
    return RecentPageRequest(check_size(page_size, RECENT_PAGE), RecentCursor.decode(page_token))


def next_recent_token(rows: list[RecentConversation], size: int) -> str:
    """The token of the page after a full page (more may follow); "" after the last one."""
    return RecentCursor.after(rows[-1]).encode() if rows and len(rows) == size else ""
