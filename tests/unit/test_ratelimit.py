"""Token-bucket arithmetic of zenthor.ratelimit, on a clock the test moves."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from zenthor.auth.principal import Principal, ResolvedUser, Role, UserStatus
from zenthor.config import Settings
from zenthor.errors import ResourceExhausted, to_rpc_status
from zenthor.ratelimit import Rate, RateLimit, RateLimits, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def buckets(per_s: float, burst: int, clock: Clock, max_keys: int = 100) -> TokenBuckets:
    return TokenBuckets(Rate(per_s, burst), clock, max_keys)


def test_a_new_caller_may_spend_the_whole_burst_then_waits_one_token() -> None:
    clock = Clock()
    b = buckets(0.5, 3, clock)  # one token every 2 s
    assert [b.take("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("u") == pytest.approx(2.0)
    assert b.take("u") == pytest.approx(2.0), "a refused call spends nothing"


def test_tokens_come_back_at_the_rate_and_the_wait_shrinks_with_time() -> None:
    clock = Clock()
    b = buckets(0.5, 3, clock)
    for _ in range(3):
        b.take("u")
    clock.now += 1.5
    assert b.take("u") == pytest.approx(0.5)
    clock.now += 0.5
    assert b.take("u") == 0.0
    assert b.take("u") == pytest.approx(2.0)


def test_an_idle_bucket_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    b = buckets(1.0, 2, clock)
    b.take("u")
    clock.now += 3_600
    assert [b.take("u") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_callers_have_their_own_buckets() -> None:
    clock = Clock()
    b = buckets(1.0, 1, clock)
    assert b.take("ana") == 0.0
    assert b.take("ana") > 0
    assert b.take("bob") == 0.0


def test_a_clock_stepping_back_neither_refills_nor_drains() -> None:
    clock = Clock()
    b = buckets(1.0, 2, clock)
    b.take("u")
    clock.now -= 100
    assert b.take("u") == 0.0
    assert b.take("u") == pytest.approx(1.0)


def test_a_rate_of_zero_never_limits_and_keeps_no_state() -> None:
    clock = Clock()
    b = buckets(0.0, 1, clock)
    assert all(b.take("u") == 0.0 for _ in range(1_000))
    assert len(b) == 0


def test_idle_buckets_are_forgotten_once_full_again() -> None:
    clock = Clock()
    b = buckets(1.0, 2, clock)
    for n in range(50):
        b.take(f"caller-{n}")
    clock.now += 2.0  # every one of them is full again
    b.take("latest")
    assert len(b) == 1


def test_memory_stays_bounded_under_many_callers() -> None:
    clock = Clock()
    b = buckets(0.001, 5, clock, max_keys=100)
    for n in range(10_000):
        b.take(f"caller-{n}")
    assert len(b) == 100
    # The most recent callers keep their spent tokens.
    assert [b.take("caller-9999") > 0 for _ in range(5)] == [False, False, False, False, True]


def user(n: int = 1) -> Principal:
    return Principal(user=ResolvedUser(uuid.UUID(int=n), Role.MEMBER, UserStatus.ACTIVE, None))


def limits(clock: Clock, **values: object) -> RateLimits:
    return RateLimits(Settings.model_validate(values), clock)


def test_sends_are_counted_per_user_per_minute() -> None:
    clock = Clock()
    rl = limits(clock, rate_limit_sends_per_minute=6, rate_limit_sends_burst=2)
    rl.spend(user(1), RateLimit.SENDS)
    rl.spend(user(1), RateLimit.SENDS)
    with pytest.raises(ResourceExhausted) as refused:
        rl.spend(user(1), RateLimit.SENDS)
    assert refused.value.retry_after_s == pytest.approx(10.0)
    assert "messages sent" in refused.value.message
    rl.spend(user(2), RateLimit.SENDS)
    rl.spend(user(1), RateLimit.WATCH_STREAMS)  # watch streams are off here
    rl.spend(user(1), RateLimit.UNSPECIFIED)
    clock.now += 10
    rl.spend(user(1), RateLimit.SENDS)


def test_the_service_key_budget_counts_every_service_call_except_exempt_ones() -> None:
    clock = Clock()
    rl = limits(clock, rate_limit_service_calls_per_s=10, rate_limit_service_burst=3)
    service = Principal(service=True)
    for limit in (RateLimit.UNSPECIFIED, RateLimit.SENDS, RateLimit.WATCH_STREAMS):
        rl.spend(service, limit)
    for _ in range(10):
        rl.spend(service, RateLimit.EXEMPT)
    with pytest.raises(ResourceExhausted) as refused:
        rl.spend(service, RateLimit.UNSPECIFIED)
    assert refused.value.retry_after_s == pytest.approx(0.1)
    rl.spend(user(1), RateLimit.SENDS)  # users are not limited by the key's budget


def test_all_limits_are_off_by_default() -> None:
    rl = limits(Clock())
    assert not rl.any_enabled
    for _ in range(1_000):
        rl.spend(user(1), RateLimit.SENDS)
        rl.spend(Principal(service=True), RateLimit.UNSPECIFIED)


def test_a_refusal_carries_retry_info_in_its_status() -> None:
    status = to_rpc_status(ResourceExhausted("slow down", retry_after_s=2.25), "req-1")
    infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.RetryInfo()
    any_pb2.Any.Unpack(infos[0], info)
    assert info.retry_delay.ToNanoseconds() == 2_250_000_000
    plain = to_rpc_status(ResourceExhausted("quota"), "req-2")
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in plain.details)


def test_waiting_exactly_the_advertised_time_is_enough_despite_float_error() -> None:
    clock = Clock()
    b = TokenBuckets(Rate.per_minute(2.5, 1), clock)  # a token every 24 s: 24 × 2.5 / 60 is 0.99999…
    b.take("u")
    wait = b.take("u")
    assert wait == pytest.approx(24.0)
    clock.now += wait
    assert b.take("u") == 0.0
