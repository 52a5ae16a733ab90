"""Pure rules of the kit: ids, page tokens, the principal cache, settings."""

from __future__ import annotations

import uuid

import pytest

from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.auth.resolver import CachingResolver
from zenthor.config import Settings
from zenthor.errors import InvalidArgument
from zenthor.pagination import decode_token, encode_token, next_token, page_request


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
    assert decode_token(encode_token(last)) == last
    assert decode_token("") is None
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_token("!!!")
    assert page_request(0, "").size == 100
    assert next_token([last], 1) and next_token([last], 2) == ""


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
