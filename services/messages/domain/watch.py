"""Watch positions: the resume point of a WatchConversation stream."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from zenthor.errors import InvalidArgument
from zenthor.pagination import decode_token, encode_token

_POSITION_FIELDS: dict[str, type[str] | type[int]] = {"c": str, "r": int}


@dataclass(frozen=True)
class WatchPosition:
    """Everything of `conversation_id` up to `revision` has been sent."""

    conversation_id: uuid.UUID
    revision: int

    def encode(self) -> str:
        return encode_token({"c": self.conversation_id.hex, "r": self.revision})

    @staticmethod
    def decode(token: str, conversation_id: uuid.UUID, field: str = "resume_position") -> WatchPosition | None:
        """The position a client resumes from; None for an empty token. A damaged token, or
        one of another conversation, is INVALID_ARGUMENT naming `field`."""
        fields = decode_token(token, _POSITION_FIELDS, field=field)
        if fields is None:
            return None
        try:
            position = WatchPosition(uuid.UUID(hex=str(fields["c"])), int(fields["r"]))
        except ValueError as e:
            raise InvalidArgument(field, "is not a token this service issued") from e
        if position.conversation_id != conversation_id:
            raise InvalidArgument(field, "belongs to another conversation")
        return position
