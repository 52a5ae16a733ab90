"""Messages rules without I/O: the auto-title (docs/hardening.md #29), ownership
(docs/architecture.md §4), tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.messages.domain.conversations import Channel, Conversation, ConversationStatus
from services.messages.domain.recent import RecentCursor
from services.messages.domain.titles import auto_title, title_from
from services.messages.domain.watch import WatchPosition
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.errors import InvalidArgument

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_title_is_the_content_up_to_50_characters_else_cut_with_an_ellipsis() -> None:
    assert title_from("a" * 50) == "a" * 50
    assert title_from("a" * 51) == "a" * 50 + "\u2026"
    assert title_from("") == ""


def test_an_emoji_counts_as_one_character_not_two_utf16_units() -> None:
    assert title_from("x" * 49 + "\U0001f600" + "yyyy") == "x" * 49 + "\U0001f600" + "\u2026"


@pytest.mark.parametrize(
    "cluster",
    [
        "\U0001f44d\U0001f3fd",  # emoji + skin tone
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # ZWJ family
        "\U0001f1e7\U0001f1f7",  # regional-indicator flag
        "e\u0301",  # e + combining acute
        "1\ufe0f\u20e3",  # keycap
        "\u2764\ufe0f",  # heart + emoji presentation selector
    ],
)
def test_the_cut_never_splits_a_character_the_reader_sees_as_one(cluster: str) -> None:
    # The cluster starts at the 50th code point and runs past it: it is left out whole.
    assert title_from("x" * 49 + cluster + "yyyy") == "x" * 49 + "\u2026"


def test_a_flag_after_an_even_run_of_flags_is_cut_between_flags() -> None:
    flag = "\U0001f1e7\U0001f1f7"
    assert title_from("x" * 46 + flag * 3) == "x" * 46 + flag * 2 + "\u2026"


def test_one_cluster_longer_than_the_limit_is_kept_whole() -> None:
    zalgo = "a" + "\u0301" * 60
    assert title_from(zalgo + "b") == zalgo + "\u2026"


def test_only_a_missing_empty_or_default_title_is_replaced() -> None:
    assert auto_title(None, "hi") == "hi"
    assert auto_title("", "hi") == "hi"
    assert auto_title("New chat", "hi") == "hi"
    assert auto_title("Trip", "hi") is None


def conversation(user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> Conversation:
    channel = Channel.WEB if user_id else Channel.WHATSAPP
    return Conversation(uuid.uuid4(), channel, user_id, contact_id, None, None, ConversationStatus.ACTIVE, NOW, NOW, 1, 1)


def test_ownership_by_user_id_or_linked_contact_and_never_by_missing_ids() -> None:
    alice, bob, k1 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    alice_user = ResolvedUser(alice, Role.MEMBER, UserStatus.ACTIVE, k1)
    bob_user = ResolvedUser(bob, Role.MEMBER, UserStatus.ACTIVE, None)
    assert conversation(alice, None).owned_by(alice_user)
    assert conversation(None, k1).owned_by(alice_user)
    assert not conversation(alice, None).owned_by(bob_user)
    assert not conversation(None, k1).owned_by(bob_user)
    assert not conversation(None, uuid.uuid4()).owned_by(bob_user)  # None contact never matches


def test_positions_and_cursors_round_trip_and_reject_foreign_tokens() -> None:
    conv = uuid.uuid4()
    position = WatchPosition(conv, 42)
    assert WatchPosition.decode(position.encode(), conv) == position
    assert WatchPosition.decode("", conv) is None
    with pytest.raises(InvalidArgument):
        WatchPosition.decode(position.encode(), uuid.uuid4())
    with pytest.raises(InvalidArgument):
        WatchPosition.decode("!!", conv)
    cursor = RecentCursor(NOW, 1, conv)
    assert RecentCursor.decode(cursor.encode()) == cursor
    with pytest.raises(InvalidArgument):
        RecentCursor.decode(position.encode())
