"""Rate limits: per-caller token buckets, and the interceptor that spends them on every call.

Which calls spend what is declared on each RPC with `(zenthor.common.v1.rate_limit)`
(proto/zenthor/common/v1/auth.proto): `SENDS` and `WATCH_STREAMS` are per-user budgets; every
call made with the service key spends the key's budget, except methods marked `EXEMPT`. The
sizes are settings (`ZENTHOR_RATE_LIMIT_*`, zenthor/config.py); a rate of 0 turns a limit off.

A call over its budget is RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` saying when the
next token arrives (the gateway answers 429 with `Retry-After`). Buckets live in the process:
with N replicas of a service a caller can spend N budgets (docs/operations.md, "Rate limits").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from zenthor.auth.modes import full_method_name
from zenthor.auth.principal import Principal, current_principal
from zenthor.config import Settings
from zenthor.errors import ResourceExhausted
from zenthor.gen.zenthor.common.v1 import auth_pb2
from zenthor.interceptors import Continuation, Ctx, Handler, is_infrastructure, wrap_handler

# Seconds from an arbitrary origin that never go backwards (time.monotonic); tests move their own.
Clock = Callable[[], float]

# The one bucket of the service key: every process is configured with a single key.
SERVICE_KEY_BUCKET = "service-key"
# Float error in `elapsed × rate` (24 s at 2.5 per minute is 0.99999… tokens) must not refuse a
# caller who waited exactly the time RetryInfo told them.
_ROUNDING = 1e-9


class RateLimit(IntEnum):
    UNSPECIFIED = auth_pb2.RATE_LIMIT_UNSPECIFIED
    SENDS = auth_pb2.RATE_LIMIT_SENDS
    WATCH_STREAMS = auth_pb2.RATE_LIMIT_WATCH_STREAMS
    EXEMPT = auth_pb2.RATE_LIMIT_EXEMPT


def method_rate_limits(services: Iterable[ServiceDescriptor]) -> dict[str, RateLimit]:
    """`/pkg.Service/Method` → the budget it declares (UNSPECIFIED when none)."""
    return {
        full_method_name(service, method.name): RateLimit(method.GetOptions().Extensions[auth_pb2.rate_limit])
        for service in services
        for method in service.methods
    }


@dataclass(frozen=True)
class Rate:
    """Tokens added per second, up to `burst` kept; `per_s` 0 means no limit."""

    per_s: float
    burst: int

    @classmethod
    def per_minute(cls, count: float, burst: int) -> Rate:
        return cls(count / 60.0, burst)

    @property
    def enabled(self) -> bool:
        return self.per_s > 0


class TokenBuckets:
    """One token bucket per key, in memory, for one rate. A new key starts full. At most
    `max_keys` are kept: buckets idle long enough to have refilled are dropped as soon as they
    are the least recently used (a full bucket is the same as none), and past `max_keys` the
    least recently used goes anyway, so memory stays bounded whoever calls."""

    def __init__(self, rate: Rate, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.clock = clock
        self._max_keys = max_keys
        # key → (tokens, when they were counted); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spends one token of `key`'s bucket: 0.0 when there was one, else the seconds until
        there will be (nothing is spent then)."""
        rate = self.rate
        if not rate.enabled:
            return 0.0
        now = self.clock()
        tokens = self._tokens(self._buckets.pop(key, None), now)
        wait = 0.0
        if tokens >= 1.0 - _ROUNDING:
            tokens = max(0.0, tokens - 1.0)
        else:
            wait = (1.0 - tokens) / rate.per_s
        self._buckets[key] = (tokens, now)
        self._evict(now)
        return wait

    def _tokens(self, entry: tuple[float, float] | None, now: float) -> float:
        if entry is None:
            return float(self.rate.burst)
        tokens, counted_at = entry
        # max(0, …): a clock that steps back refills nothing rather than draining the bucket.
        return min(float(self.rate.burst), tokens + max(0.0, now - counted_at) * self.rate.per_s)

    def _evict(self, now: float) -> None:
        while len(self._buckets) > 1:
            key, entry = next(iter(self._buckets.items()))
            if self._tokens(entry, now) < self.rate.burst and len(self._buckets) <= self._max_keys:
                return
            del self._buckets[key]


class RateLimits:
    """The budgets of one server process, built from the settings."""

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        keys = settings.rate_limit_max_callers
        self.per_user: dict[RateLimit, TokenBuckets] = {
            RateLimit.SENDS: TokenBuckets(
                Rate.per_minute(settings.rate_limit_sends_per_minute, settings.rate_limit_sends_burst), clock, keys
            ),
            RateLimit.WATCH_STREAMS: TokenBuckets(
                Rate.per_minute(settings.rate_limit_watch_streams_per_minute, settings.rate_limit_watch_streams_burst),
                clock,
                keys,
            ),
        }
        self.service_key = TokenBuckets(
            Rate(settings.rate_limit_service_calls_per_s, settings.rate_limit_service_burst), clock, 1
        )

    @property
    def any_enabled(self) -> bool:
        return any(b.rate.enabled for b in (*self.per_user.values(), self.service_key))

    def use_clock(self, clock: Clock) -> None:
        """Replaces the clock of every bucket (tests drive time by hand)."""
        for buckets in (*self.per_user.values(), self.service_key):
            buckets.clock = clock

    def spend(self, principal: Principal, limit: RateLimit) -> None:
        """Spends the caller's token for a call declaring `limit`; raises ResourceExhausted,
        carrying the wait until the next token, when there is none."""
        if limit is RateLimit.EXEMPT:
            return
        if principal.service:
            wait = self.service_key.take(SERVICE_KEY_BUCKET)
            what = "calls with this service key"
        elif principal.user is not None and limit in self.per_user:
            wait = self.per_user[limit].take(str(principal.user.user_id))
            what = "messages sent" if limit is RateLimit.SENDS else "watch streams opened"
        else:
            return
        if wait > 0:
            raise ResourceExhausted(f"Rate limit: too many {what}; retry in {wait:.1f} s", retry_after_s=wait)


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Spends the caller's budget before the handler runs. It sits after authentication, which
    names the caller (zenthor.auth.principal), and before the request is decoded, so a caller
    over its budget costs no decoding."""

    def __init__(self, limits: RateLimits, method_limits: Mapping[str, RateLimit]) -> None:
        self._limits = limits
        self._methods = method_limits

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_infrastructure(method) or not self._limits.any_enabled:
            return handler
        limit = self._methods.get(method, RateLimit.UNSPECIFIED)

        @asynccontextmanager
        async def spend(_context: Ctx) -> AsyncIterator[None]:
            self._limits.spend(current_principal(), limit)
            yield

        return wrap_handler(handler, spend)
