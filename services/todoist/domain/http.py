"""How Todoist's HTTP answers read to our callers: the original's error text, and which status
an answer becomes once the bounded retries are spent."""

from __future__ import annotations

from zenthor.errors import DomainError, FailedPrecondition, NotFound, ResourceExhausted, Unavailable

# The original cut error bodies at 300 characters followed by `...`.
MAX_BODY_CHARS = 300
NO_BODY = "No response body"


def truncate_body(body: str) -> str:
    if not body:
        return NO_BODY
    return body[:MAX_BODY_CHARS] + "..." if len(body) > MAX_BODY_CHARS else body


def request_failed_message(status: int, body: str) -> str:
    return f"Todoist request failed ({status}): {truncate_body(body)}"


def is_retryable_status(status: int) -> bool:
    """Rate limiting and server errors may pass; any other answer is Todoist's final word."""
    return status == 429 or status >= 500


def error_for_status(status: int, message: str) -> DomainError:
    """A non-2xx answer as our status: what is missing at Todoist is NOT_FOUND, rate limiting
    RESOURCE_EXHAUSTED, Todoist being down UNAVAILABLE (the caller may retry those); every other
    refusal (a revoked token, a rejected field) is FAILED_PRECONDITION, final."""
    if status == 404:
        return NotFound(message)
    if status == 429:
        return ResourceExhausted(message)
    if status >= 500:
        return Unavailable(message)
    return FailedPrecondition(message)
