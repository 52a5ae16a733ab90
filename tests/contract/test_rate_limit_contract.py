"""Rate limits are declared on the contracts: every stream a person may open spends the watch
budget, every way a person sends a message spends the send budget, and the per-user budgets sit
only on methods people call (zenthor/ratelimit.py reads the same options)."""

from __future__ import annotations

from tests.contract.test_contracts import SERVICES
from zenthor.auth.modes import AuthMode, full_method_name, method_auth_modes
from zenthor.ratelimit import RateLimit, method_rate_limits

PERSON_MODES = {AuthMode.USER, AuthMode.ADMIN}
SENDS = {"/zenthor.messages.v1.MessagesService/SendMessage"}
# Calls a service makes on behalf of another caller's call, already counted there.
EXEMPT = {"/zenthor.identity.v1.IdentityService/ResolvePrincipal"}


def test_every_stream_a_person_may_open_spends_the_watch_budget() -> None:
    modes, limits = method_auth_modes(SERVICES), method_rate_limits(SERVICES)
    person_streams = {
        full_method_name(s, m.name)
        for s in SERVICES
        for m in s.methods
        if m.server_streaming and modes[full_method_name(s, m.name)] in PERSON_MODES
    }
    assert "/zenthor.messages.v1.MessagesService/WatchConversation" in person_streams
    assert {m for m in person_streams if limits[m] is not RateLimit.WATCH_STREAMS} == set()
    assert {m for m, limit in limits.items() if limit is RateLimit.WATCH_STREAMS} == person_streams


def test_sending_a_message_spends_the_send_budget() -> None:
    limits = method_rate_limits(SERVICES)
    assert {m for m, limit in limits.items() if limit is RateLimit.SENDS} == SENDS


def test_per_user_budgets_sit_only_on_methods_people_call_and_exemptions_only_on_service_ones() -> None:
    modes, limits = method_auth_modes(SERVICES), method_rate_limits(SERVICES)
    per_user = {m for m, limit in limits.items() if limit in (RateLimit.SENDS, RateLimit.WATCH_STREAMS)}
    assert {m for m in per_user if modes[m] not in PERSON_MODES} == set()
    assert {m for m, limit in limits.items() if limit is RateLimit.EXEMPT} == EXEMPT
    assert all(modes[m] is AuthMode.SERVICE for m in EXEMPT)
