"""TodoistOAuthWorkflow: one Todoist OAuth flow, from its state's creation to its end. It waits
for the callback (signal `callback`) at most the state's TTL; the code is exchanged by an
activity calling the todoist service (retried, except when Todoist refuses the code), and the
state is discarded however the flow ends — connected, refused, denied or expired
(docs/hardening.md #8). The todoist service starts it by name (`todoist-oauth-<state>`) and
signals it from the gateway's callback or from CompleteTodoistOAuth.

    StartTodoistOAuth ──start──► wait callback ≤ 10 min ──timeout──► discard state → expired
                                       │ signal (the one claiming callback)
                                       ▼
                  ExchangeTodoistOAuthCode (retried; invalid_grant final) → discard → connected/failed
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import grpc

    from zenthor.clients import Peers
    from zenthor.errors import is_permanent
    from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb
    from zenthor.logs import get_logger

log = get_logger("workflows.todoist_oauth")

# The names the todoist service uses to start and signal it (services/todoist/peers.py).
TODOIST_OAUTH_WORKFLOW = "TodoistOAuthWorkflow"
CALLBACK_SIGNAL = "callback"
# The original's state TTL, the default when a start does not say.
STATE_TTL_S = 600.0
# Two Todoist round trips with their own bounded retries (services/todoist/peers.py).
EXCHANGE_RPC_DEADLINE_S = 60.0
EXCHANGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
DISCARD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)
EXPIRED_MESSAGE = "Todoist OAuth state expired. Please try connecting again."


@dataclass
class TodoistOAuthInput:
    state: str
    ttl_s: float = STATE_TTL_S


@dataclass
class TodoistOAuthCallback:
    """The claiming callback: a code, or Todoist's `error` (the user denied access)."""

    code: str | None = None
    error: str | None = None


@dataclass
class ExchangeInput:
    state: str
    code: str


@dataclass
class TodoistOAuthResult:
    """How the flow ended: `connected`, `denied`, `failed` (`code` names the gRPC status the
    service answered) or `expired`."""

    end: str
    message: str = ""
    code: str = ""
    user_id: str = ""


def _application_error(rpc: str, error: grpc.aio.AioRpcError) -> ApplicationError:
    """The service's own message (the original's words, shown to the user), typed by status;
    permanent answers (a refused code: FAILED_PRECONDITION) are not retried."""
    code = error.code()
    return ApplicationError(error.details() or f"{rpc}: {code.name}", type=f"grpc.{code.name}", non_retryable=is_permanent(code))


class TodoistOAuthActivities:
    """Activities reaching the todoist service through the shared peer channels."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @activity.defn(name="todoist_exchange_code")
    async def exchange_code(self, input: ExchangeInput) -> str:
        """The connected user's id (`usr_…`)."""
        request = pb.ExchangeTodoistOAuthCodeRequest(state=input.state, code=input.code)
        try:
            reply = await self._peers.todoist().ExchangeTodoistOAuthCode(request, timeout=EXCHANGE_RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            raise _application_error("ExchangeTodoistOAuthCode", e) from e
        return reply.user_id

    @activity.defn(name="todoist_discard_state")
    async def discard_state(self, state: str) -> bool:
        try:
            reply = await self._peers.todoist().DiscardTodoistOAuthState(pb.DiscardTodoistOAuthStateRequest(state=state))
        except grpc.aio.AioRpcError as e:
            raise _application_error("DiscardTodoistOAuthState", e) from e
        return reply.discarded


@workflow.defn(name=TODOIST_OAUTH_WORKFLOW)
class TodoistOAuthWorkflow:
    def __init__(self) -> None:
        self._callback: TodoistOAuthCallback | None = None

    @workflow.signal(name=CALLBACK_SIGNAL)
    def callback(self, callback: TodoistOAuthCallback) -> None:
        # The service lets exactly one callback claim the state; should another signal still
        # arrive, the first one stays the one that counts.
        if self._callback is None:
            self._callback = callback

    @workflow.run
    async def run(self, input: TodoistOAuthInput) -> TodoistOAuthResult:
        try:
            await workflow.wait_condition(lambda: self._callback is not None, timeout=timedelta(seconds=input.ttl_s))
        except TimeoutError:
            await self._discard(input.state)
            return TodoistOAuthResult(end="expired", message=EXPIRED_MESSAGE)
        callback = self._callback
        assert callback is not None
        if callback.error:
            await self._discard(input.state)
            return TodoistOAuthResult(end="denied", message=callback.error)
        try:
            user_id = await workflow.execute_activity_method(
                TodoistOAuthActivities.exchange_code,
                ExchangeInput(state=input.state, code=callback.code or ""),
                start_to_close_timeout=timedelta(seconds=EXCHANGE_RPC_DEADLINE_S + 10),
                retry_policy=EXCHANGE_RETRY,
            )
        except ActivityError as e:
            await self._discard(input.state)
            return _failed(e)
        await self._discard(input.state)
        return TodoistOAuthResult(end="connected", user_id=user_id)

    async def _discard(self, state: str) -> None:
        """Consumes the state however the flow ended; if the service stays down, the hourly
        cleanup deletes it after its expiry instead."""
        try:
            await workflow.execute_activity_method(
                TodoistOAuthActivities.discard_state,
                state,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DISCARD_RETRY,
            )
        except ActivityError:
            workflow.logger.warning("todoist oauth state %s left to the hourly cleanup", state)


def _failed(error: ActivityError) -> TodoistOAuthResult:
    cause = error.cause
    if isinstance(cause, ApplicationError):
        code = (cause.type or "").removeprefix("grpc.")
        return TodoistOAuthResult(end="failed", message=cause.message, code=code)
    return TodoistOAuthResult(end="failed", message="Todoist did not answer in time", code="UNAVAILABLE")
