"""Domain errors and their one mapping to gRPC status.

    DomainError
     ├── InvalidArgument(field, why)   → INVALID_ARGUMENT  (+ google.rpc.BadRequest)
     ├── NotFound(what)                → NOT_FOUND
     ├── AlreadyExists(what)           → ALREADY_EXISTS
     ├── FailedPrecondition(why)       → FAILED_PRECONDITION
     ├── Unauthenticated(why)          → UNAUTHENTICATED
     ├── PermissionDenied(why)         → PERMISSION_DENIED
     ├── ResourceExhausted(why)        → RESOURCE_EXHAUSTED  (+ google.rpc.RetryInfo with retry_after_s)
     ├── Unavailable(why)              → UNAVAILABLE
     └── Unimplemented(method)         → UNIMPLEMENTED

Domain and store code raise these; only `to_rpc_status` turns them into a status. Anything
else escaping a handler becomes INTERNAL carrying the request id and no traceback.

The other direction — a peer's answer — is judged by `is_permanent`, the one table of which
gRPC codes a retry can change, used by the outbox relay, the peers modules and the Temporal
workflows alike (docs/architecture.md §5).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "zenthor.dev"

# Answers that waiting cannot change: the request is wrong, the target's state refuses it, or
# the deployment is (an unbuilt RPC, a wrong key). The outbox parks such an event as a dead
# letter for an operator, a workflow fails at once so the Temporal UI shows why. Every other
# code (UNAVAILABLE while a peer restarts, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
# INTERNAL, UNKNOWN…) is retried with capped backoff.
PERMANENT_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


def is_permanent(code: grpc.StatusCode | None) -> bool:
    """Whether a peer's answer with `code` would be the same on every retry."""
    return code in PERMANENT_CODES


class DomainError(Exception):
    """Base of every error a caller may see; `message` is safe to show."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "DOMAIN_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        # When waiting is known to help (a rate limit's next token): sent as RetryInfo, and as
        # the gateway's Retry-After.
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} is not built yet (see docs/parity.md)")


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: DomainError, request_id: str) -> status_pb2.Status:
    """The google.rpc.Status for a domain error: code, safe message, structured details."""
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)),
        _pack(error_details_pb2.RequestInfo(request_id=request_id)),
    ]
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.why
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if isinstance(error, ResourceExhausted) and error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, round(error.retry_after_s * 1e9)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def internal_status(request_id: str) -> status_pb2.Status:
    """What a caller sees for an unexpected failure: the request id to quote, nothing else."""
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (request id {request_id})",
        details=[_pack(error_details_pb2.RequestInfo(request_id=request_id))],
    )
