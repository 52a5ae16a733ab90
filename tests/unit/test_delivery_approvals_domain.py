"""Pure rules of delivery and approvals: lease clamps, batch bounds, the recipient key, the
effective approval status at the TTL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.approvals.domain.approvals import (
    Approval,
    ApprovalStatus,
    Channel,
    Owner,
    expiry_for,
    wait_deadline,
)
from services.delivery.domain import outbound, webhooks, whatsapp
from zenthor.errors import InvalidArgument
from zenthor.pagination import key_page_request, next_key_token

T0 = datetime.fromtimestamp(1_700_000_000, UTC)


@pytest.mark.parametrize(
    ("asked", "granted"),
    [
        (None, timedelta(seconds=30)),  # the senders' default
        (timedelta(0), timedelta(seconds=30)),  # the original's `lockMs || 30000`
        (timedelta(milliseconds=10), timedelta(seconds=1)),  # the minimum senders expect
        (timedelta(minutes=10), timedelta(minutes=10)),
    ],
)
def test_claim_lease_defaults_and_is_raised_to_the_minimum(asked: timedelta | None, granted: timedelta) -> None:
    assert outbound.claim_lease(asked) == granted


@pytest.mark.parametrize("asked", [timedelta(seconds=-1), timedelta(minutes=10, microseconds=1)])
def test_claim_lease_outside_bounds_is_refused(asked: timedelta) -> None:
    with pytest.raises(InvalidArgument) as error:
        outbound.claim_lease(asked)
    assert error.value.field == "lease"


@pytest.mark.parametrize(
    ("asked", "granted"),
    [(None, timedelta(seconds=45)), (timedelta(seconds=2), timedelta(seconds=10)), (timedelta(seconds=30), timedelta(seconds=30))],
)
def test_account_lease_ttl_defaults_and_is_raised_to_ten_seconds(asked: timedelta | None, granted: timedelta) -> None:
    assert whatsapp.lease_ttl(asked) == granted


def test_claim_batch_is_between_one_and_a_hundred() -> None:
    assert [outbound.claim_batch(n) for n in (0, 1, 50, 100, 5000)] == [1, 1, 50, 100, 100]
    with pytest.raises(InvalidArgument):
        outbound.claim_batch(-1)


def test_a_message_without_a_phone_is_ordered_per_conversation() -> None:
    conversation = uuid.uuid4()
    new = outbound.new_outbound(
        channel=outbound.Channel.WEB,
        account_id="default",
        conversation_id=conversation,
        message_id=uuid.uuid4(),
        to=None,
        content="hi",
        metadata=None,
    )
    assert new.recipient_key == f"conversation:{conversation.hex}"
    with pytest.raises(InvalidArgument) as error:
        outbound.new_outbound(
            channel=outbound.Channel.WHATSAPP,
            account_id="default",
            conversation_id=conversation,
            message_id=uuid.uuid4(),
            to=None,
            content="hi",
            metadata=None,
        )
    assert error.value.field == "to"


def test_errors_keep_their_first_500_characters() -> None:
    assert outbound.error_text("x" * 700) == "x" * 500


def test_session_values_are_measured_in_utf8_bytes() -> None:
    whatsapp.check_session_value("x" * whatsapp.MAX_SESSION_VALUE_BYTES)
    with pytest.raises(InvalidArgument):
        whatsapp.check_session_value("é" * (whatsapp.MAX_SESSION_VALUE_BYTES // 2 + 1))


def test_key_page_tokens_round_trip_and_refuse_garbage() -> None:
    token = next_key_token(["a", "b"], 2)
    assert key_page_request(2, token, whatsapp.SESSION_PAGE).after == "b"
    assert next_key_token(["a"], 2) == ""
    with pytest.raises(InvalidArgument) as error:
        key_page_request(2, "not-a-token", whatsapp.SESSION_PAGE)
    assert error.value.field == "page_token"


def test_session_pages_default_to_500_and_stop_at_1000() -> None:
    assert key_page_request(0, "", whatsapp.SESSION_PAGE).size == 500
    with pytest.raises(InvalidArgument) as error:
        key_page_request(1_001, "", whatsapp.SESSION_PAGE)
    assert error.value.field == "page_size"


def approval(created: datetime) -> Approval:
    return Approval(
        id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        owner=Owner(user_id=uuid.uuid4(), contact_id=None),
        tool_name="schedule_task",
        tool_input={},
        status=ApprovalStatus.PENDING,
        channel=Channel.WEB,
        created_at=created,
        expires_at=expiry_for(created),
        resolved_at=None,
    )


def test_a_pending_approval_is_expired_from_exactly_its_ttl_on() -> None:
    a = approval(T0)
    assert a.as_of(T0 + timedelta(minutes=5) - timedelta(microseconds=1)).status is ApprovalStatus.PENDING
    expired = a.as_of(T0 + timedelta(minutes=5))
    assert (expired.status, expired.resolved_at) == (ApprovalStatus.EXPIRED, T0 + timedelta(minutes=5))


def test_a_wait_ends_at_the_expiry_or_sooner_when_asked() -> None:
    a = approval(T0)
    assert wait_deadline(a, T0, None) == T0 + timedelta(minutes=5)
    assert wait_deadline(a, T0, timedelta(seconds=30)) == T0 + timedelta(seconds=30)
    assert wait_deadline(a, T0, timedelta(hours=1)) == T0 + timedelta(minutes=5)


# --- webhook event ids: they travel as the svix-id header ---


@pytest.mark.parametrize("event_id", ["job.completed:job 1", "job.completed:\tjob", "a\nb", "del\x7f", "nul\x00"])
def test_an_event_id_with_whitespace_or_control_characters_is_refused(event_id: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        webhooks.check_event_id(event_id)
    assert refused.value.field == "event_id"


def test_an_event_id_of_printable_characters_is_kept() -> None:
    assert webhooks.check_event_id("job.completed:job_01J~ü") == "job.completed:job_01J~ü"
