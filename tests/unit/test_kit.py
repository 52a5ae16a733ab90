"""Pure rules of the kit: ids, page tokens and sizes, backoff, ownership, the permanent-error
table, the principal cache, settings."""

from __future__ import annotations

import base64
import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.auth.resolver import CachingResolver
from zenthor.backoff import backoff_delay_s
from zenthor.config import Settings
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument, is_permanent
from zenthor.pagination import (
    PageLimits,
    check_size,
    decode_token,
    encode_token,
    key_page_request,
    next_key_token,
    next_token,
    page_request,
)


def test_ids_are_prefixed_time_ordered_and_round_trip() -> None:
    first, second = ids.JOB.new(), ids.JOB.new()
    assert first.version == 7 and first < second
    text = ids.JOB.format(first)
    assert text.startswith("job_") and ids.JOB.parse(text, "job_id") == first


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "is required"), ("job_123", "must be an id like"), ("msg_" + "0" * 32, "must be a job_ id"), ("job-" + "0" * 32, "must be an id like"), ("job_" + "G" * 32, "must be an id like")],
)
def test_malformed_or_wrong_table_ids_name_the_field(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        ids.JOB.parse(text, "job_id")
    assert error.value.field == "job_id" and why in error.value.why


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    last = uuid.uuid4()
    assert page_request(10, next_token([last], 1)).after == last
    assert page_request(0, "").after is None
    with pytest.raises(InvalidArgument, match="page_token"):
        page_request(0, "!!!")
    assert page_request(0, "").size == 100
    assert next_token([last], 1) and next_token([last], 2) == ""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _b64(b'{"after":5}'),  # a field of the wrong JSON type
        _b64(b"[" * 100_000),  # nested far past any recursion limit
        _b64(b'{"after":"%s","x":1}' % uuid.uuid4().hex.encode()),  # an unknown field
        _b64(b'{"after":"not-a-uuid"}'),
        _b64(b"\xff\xfe"),  # not UTF-8
        _b64(b'{"after":"\\u0000"}'),
        "A" * 5000,
    ],
    ids=["wrong-type", "deep-nesting", "extra-field", "bad-uuid", "not-utf8", "nul", "too-long"],
)
def test_forged_page_tokens_are_invalid_argument_naming_the_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        page_request(0, token)
    assert error.value.field == "page_token"


def test_token_integers_are_bounded_bigints() -> None:
    schema = {"r": int}
    assert decode_token(encode_token({"r": 2**63 - 1}), schema, field="resume_position") == {"r": 2**63 - 1}
    for bad in (2**70, -1, True, 1.5):
        with pytest.raises(InvalidArgument, match="resume_position"):
            decode_token(_b64(json.dumps({"r": bad}).encode()), schema, field="resume_position")


def test_page_sizes_follow_each_rpcs_limits() -> None:
    limits = PageLimits(default=50, maximum=200)
    assert page_request(0, "", limits).size == 50
    assert page_request(200, "", limits).size == 200
    for size in (-1, 201, 99999999999999):
        with pytest.raises(InvalidArgument, match="page_size"):
            page_request(size, "", limits)
    with pytest.raises(InvalidArgument, match="batch_size"):
        check_size(1001, PageLimits(100, 1000), "batch_size")


def test_key_pages_carry_free_text_keys() -> None:
    token = next_key_token(["a", "b/c?d"], 2)
    assert key_page_request(2, token).after == "b/c?d"
    assert next_key_token(["a"], 2) == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        key_page_request(2, token, max_key_chars=3)
    # A key no text column could hold: a forged token decoding to half a surrogate pair.
    for forged in (b'{"after_key":"\\ud800"}', b'{"after_key":"a\\udfffb"}'):
        with pytest.raises(InvalidArgument, match="page_token"):
            key_page_request(2, _b64(forged))
    assert key_page_request(2, _b64(b'{"after_key":"\\ud83d\\ude00"}')).after == "\U0001f600"


def test_backoff_is_equal_jitter_doubling_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt, (low, high) in {1: (5, 10), 2: (10, 20), 3: (20, 40), 9: (50, 100)}.items():
        delays = [backoff_delay_s(attempt, rng, base_s=10, cap_s=100) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high


def test_backoff_without_a_generator_leaves_the_shared_random_state_alone() -> None:
    """The relays back off without a generator of their own; drawing from the `random` module's
    would move the state of whatever else in the process uses it (Hypothesis warns of exactly
    that when a relay backs off while it generates a test case)."""
    state = random.getstate()
    assert 4 <= backoff_delay_s(3, base_s=2, cap_s=100) <= 8  # attempt 3: the upper half of 2·2²
    assert random.getstate() == state


def test_ownership_is_the_users_id_or_their_linked_contact() -> None:
    contact = uuid.uuid4()
    user = ResolvedUser(uuid.uuid4(), Role.MEMBER, UserStatus.ACTIVE, contact)
    assert user.owns(user_id=user.user_id, contact_id=None)
    assert user.owns(user_id=uuid.uuid4(), contact_id=contact)
    assert not user.owns(user_id=uuid.uuid4(), contact_id=uuid.uuid4())
    assert not user.owns(user_id=None, contact_id=None)
    no_contact = ResolvedUser(uuid.uuid4(), Role.MEMBER, UserStatus.ACTIVE, None)
    assert not no_contact.owns(user_id=None, contact_id=None)


def test_one_table_says_which_peer_answers_are_permanent() -> None:
    assert is_permanent(grpc.StatusCode.INVALID_ARGUMENT) and is_permanent(grpc.StatusCode.NOT_FOUND)
    assert is_permanent(grpc.StatusCode.FAILED_PRECONDITION) and is_permanent(grpc.StatusCode.UNIMPLEMENTED)
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED, grpc.StatusCode.UNKNOWN):
        assert not is_permanent(code)


class CountingResolver:
    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, external_id: str) -> ResolvedUser | None:
        self.calls += 1
        return ResolvedUser(uuid.uuid4(), Role.MEMBER, UserStatus.ACTIVE, None)


async def test_principal_cache_answers_within_ttl_and_refreshes_after() -> None:
    now = [100.0]
    inner = CountingResolver()
    cache = CachingResolver(inner, ttl_s=5, clock=lambda: now[0])
    first = await cache.resolve("user_a")
    assert await cache.resolve("user_a") == first and inner.calls == 1
    now[0] += 5.1
    await cache.resolve("user_a")
    assert inner.calls == 2


def test_allowlist_is_trimmed_lowercased_and_drops_empties() -> None:
    settings = Settings.model_validate({"admin_email_allowlist": " Boss@Example.com , ops@example.com,"})
    assert settings.allowlisted_emails == {"boss@example.com", "ops@example.com"}


@pytest.mark.parametrize(
    "value",
    [
        datetime.now(UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch: negative seconds, positive nanos
        datetime(2026, 3, 1, 9, 30, 15, 123_456, tzinfo=timezone(timedelta(hours=-3))),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 30, 15),  # naive: local time, as FromDatetime after astimezone reads it
    ],
)
def test_timestamp_is_what_protobufs_own_conversion_gives(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value.astimezone(UTC))
    assert timestamp(value) == expected
    assert timestamp(value).ToDatetime(tzinfo=UTC) == value.astimezone(UTC)
