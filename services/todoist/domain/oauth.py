"""The OAuth flow's rules: configuration, the single-use state and its 10-minute TTL, the
authorize URL, the token grant, and how a flow can end."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.todoist.domain.http import truncate_body
from zenthor.errors import DomainError, FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from zenthor.pagination import PageLimits, check_size
from zenthor.validate import required_text

# The original's TTL: a state is valid up to and including `created_at + 10 min`.
STATE_TTL = timedelta(minutes=10)
STATE_PREFIX = "todoist_"
# `todoist_` and a UUID are 44 characters; anything far longer is not a state we issued.
MAX_STATE_CHARS = 100
# Todoist's codes are short; a bound keeps a forged callback from carrying megabytes.
MAX_CODE_CHARS = 2_000
MAX_ERROR_CHARS = 500
# CleanupExpiredTodoistOAuthStates' `batch_size`: 0 means the default.
SWEEP_BATCH = PageLimits(default=1_000, maximum=10_000)

# The original's messages, kept word for word: the web app and the runtime show them.
NOT_CONFIGURED = (
    "Todoist OAuth is not configured. Missing TODOIST_CLIENT_ID, TODOIST_CLIENT_SECRET, or "
    "TODOIST_OAUTH_REDIRECT_URI."
)
NO_TOKEN_KEY = "Todoist is not configured: TODOIST_TOKEN_KEY is not set, so no token could be stored."
INVALID_STATE = "Invalid Todoist OAuth state."
EXPIRED_STATE = "Todoist OAuth state expired. Please try connecting again."
NO_ACCESS_TOKEN = "Todoist OAuth did not return an access token."
EXCHANGE_FAILED = "Failed to exchange Todoist OAuth code: "
SUPERSEDED = "A newer Todoist connection flow was started; use its link."


class StateStatus(StrEnum):
    """A state's life: STARTING until its workflow is known to run (only then can a callback
    use it), OPEN until one callback claims it, CLAIMED while its code is exchanged, EXCHANGED
    once the connection is stored. Only OPEN accepts a callback: a state is single-use."""

    STARTING = "starting"
    OPEN = "open"
    CLAIMED = "claimed"
    EXCHANGED = "exchanged"


@dataclass(frozen=True)
class OAuthSettings:
    """What the flow needs from the configuration (the client secret stays with the HTTP client)."""

    client_id: str | None
    has_client_secret: bool
    redirect_uri: str | None
    scope: str
    authorize_url: str
    has_token_key: bool

    def check(self) -> None:
        """The original's configuration check, before anything is written; then the key the
        token will be encrypted with (docs/hardening.md #36)."""
        if not self.client_id or not self.has_client_secret or not self.redirect_uri:
            raise FailedPrecondition(NOT_CONFIGURED)
        if not self.has_token_key:
            raise FailedPrecondition(NO_TOKEN_KEY)


@dataclass(frozen=True)
class OAuthState:
    state: str
    user_id: uuid.UUID
    status: StateStatus
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class StartedFlow:
    authorization_url: str
    expires_at: datetime
    state: str


@dataclass(frozen=True)
class TokenGrant:
    """Todoist's token response. The token never appears in a repr, hence in no log line."""

    access_token: str = field(repr=False)
    token_type: str | None
    scope: str | None


@dataclass(frozen=True)
class Callback:
    """What one OAuth callback carries: a code, or Todoist's `error` (the user said no)."""

    code: str | None
    error: str | None


FlowEnd = Literal["connected", "denied", "failed", "expired"]


@dataclass(frozen=True)
class FlowOutcome:
    """How a TodoistOAuthWorkflow ended; `code` names the gRPC status of a failure."""

    end: FlowEnd
    message: str = ""
    code: str = ""


def state_for(random_uuid: uuid.UUID) -> str:
    """`todoist_` and a UUIDv4 from a CSPRNG (uuid.uuid4 reads os.urandom)."""
    return f"{STATE_PREFIX}{random_uuid}"


def check_state(value: str, field: str = "state") -> str:
    """Any non-empty string is looked up (an unknown one is `Invalid Todoist OAuth state.`, as
    in the original); only an empty or absurdly long one is bad input."""
    return required_text(value, field, max_chars=MAX_STATE_CHARS)


def check_code(value: str, field: str = "code") -> str:
    return required_text(value, field, max_chars=MAX_CODE_CHARS)


def check_callback(code: str | None, error: str | None) -> Callback:
    """A callback carries `code` or `error`; `error` wins (the user denied access)."""
    if error is not None and error.strip():
        return Callback(code=None, error=required_text(error, "error", max_chars=MAX_ERROR_CHARS))
    return Callback(code=check_code(code or ""), error=None)


def expiry_for(created_at: datetime) -> datetime:
    return created_at + STATE_TTL


def has_expired(state: OAuthState, now: datetime) -> bool:
    """Strictly after `expires_at`: a state at exactly its expiry instant is still valid."""
    return now > state.expires_at


def invalid_state() -> NotFound:
    """Unknown, consumed, or another user's state: all look the same (nothing is revealed)."""
    return NotFound(INVALID_STATE)


def authorization_url(settings: OAuthSettings, state: str) -> str:
    """The authorize URL with client_id, scope, state, redirect_uri set in that order; query
    parameters of a configured URL are kept, same-named ones overwritten in place (form-style
    encoding, as URLSearchParams.set does)."""
    parts = urlsplit(settings.authorize_url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = [
        ("client_id", settings.client_id or ""),
        ("scope", settings.scope),
        ("state", state),
        ("redirect_uri", settings.redirect_uri or ""),
    ]
    for name, value in ours:
        positions = [i for i, (k, _) in enumerate(params) if k == name]
        if positions:
            params[positions[0]] = (name, value)
            params = [p for i, p in enumerate(params) if i == positions[0] or p[0] != name]
        else:
            params.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(params)))


def token_grant(body: Any) -> TokenGrant:
    """The token response; no (or an empty) `access_token` is the original's error."""
    data = body if isinstance(body, dict) else {}
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise FailedPrecondition(NO_ACCESS_TOKEN)
    return TokenGrant(access_token=token, token_type=_text(data.get("token_type")), scope=_text(data.get("scope")))


def exchange_failed_message(body: str) -> str:
    return EXCHANGE_FAILED + truncate_body(body)


def check_batch_size(value: int) -> int:
    return check_size(value, SWEEP_BATCH, "batch_size")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_FAILURES: dict[str, type[DomainError]] = {
    "NOT_FOUND": NotFound,
    "FAILED_PRECONDITION": FailedPrecondition,
    "INVALID_ARGUMENT": FailedPrecondition,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
}


def outcome_error(outcome: FlowOutcome) -> DomainError:
    """The error a caller sees for a flow that did not connect, with the flow's own message
    (the original's words); a failure of unknown kind is UNAVAILABLE, never INTERNAL."""
    if outcome.end == "expired":
        return FailedPrecondition(EXPIRED_STATE)
    if outcome.end == "denied":
        return FailedPrecondition(f"Todoist authorization was not granted: {outcome.message}")
    return _FAILURES.get(outcome.code, Unavailable)(outcome.message or "Todoist OAuth failed")


def exchange_error(status: int, body: str) -> DomainError:
    """A refused token request: Todoist down or rate limiting may pass (the workflow retries
    them); any other refusal — `invalid_grant` for a spent or unknown code — is final."""
    message = exchange_failed_message(body)
    if status == 429:
        return ResourceExhausted(message)
    if status >= 500:
        return Unavailable(message)
    return FailedPrecondition(message)
