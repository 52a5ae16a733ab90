"""WebhookDeliveryWorkflow: one delivery's attempt series (docs/webhooks.md). The delivery
service starts it through its outbox (id = the delivery id, `<id>-<series>` for a redelivery),
so a repeated start is a no-op.

    attempt activity (Temporal retry policy: the schedule of WebhookDeliveryInput, capped attempts)
        GetWebhookDeliveryTarget → resolve + check the URL's addresses → signed POST (svix)
        → RecordWebhookAttempt (2xx: DELIVERED) → non-2xx raises, Temporal retries later
    attempts used up → FailWebhookDelivery (FAILED)

Each attempt re-reads the target (a rotated secret or an edited URL applies to the next attempt)
and re-checks every address the host resolves to, then connects to one of the checked addresses
only (zenthor.egress: a DNS answer that changes after the check cannot redirect the POST).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import grpc
    import httpx
    from svix.webhooks import Webhook

    from zenthor import egress
    from zenthor.clients import Peers
    from zenthor.convert import duration_pb, timestamp
    from zenthor.errors import DomainError, is_permanent
    from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
    from zenthor.logs import get_logger
    from zenthor.webhooks import WEBHOOK_DELIVERY_WORKFLOW, WebhookDeliveryInput

log = get_logger("workflows.webhook_delivery")

# How an attempt may end without a retry: the delivery is gone (endpoint deleted), or another
# series took over / it is final already. `WebhookEndpointDisabled` fails the delivery at once.
GONE = "gone"
SUPERSEDED = "superseded"
DELIVERED = "delivered"
FAILED = "failed"
DISABLED_ERROR_TYPE = "WebhookEndpointDisabled"
ATTEMPT_ERROR_TYPE = "WebhookAttemptFailed"
USER_AGENT = "Zenthor-Webhooks/1"
# The delivery service's calls around the POST (target, record) within this bound each.
RPC_DEADLINE_S = 10.0
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@dataclass
class FailInput:
    delivery_id: str
    series: int
    error: str


@dataclass(frozen=True)
class PostOutcome:
    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _rpc_error(rpc: str, error: grpc.aio.AioRpcError) -> ApplicationError:
    code = error.code()
    return ApplicationError(f"{rpc}: {code.name}: {error.details()}", type=f"grpc.{code.name}", non_retryable=is_permanent(code))


async def post_signed(
    target: egress.TargetUrl, addresses: list[egress.IpAddress], secret: str, event_id: str, body: str, timeout_s: float
) -> PostOutcome:
    """One POST of `body`, signed the svix way, to the first checked address; the answer's body is
    never read (a receiver cannot make us buffer anything)."""
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": egress.host_header(target),
        "svix-id": event_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(secret).sign(event_id, now, body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    # A client per attempt: pooled connections are keyed by address, and two hosts behind one
    # address must never share a TLS connection made for the other's name.
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        try:
            request = client.build_request(
                "POST", egress.pinned_request_url(target, addresses[0]), content=body.encode(), headers=headers,
                extensions=extensions,
            )
            response = await client.send(request, stream=True)
            await response.aclose()
        except httpx.HTTPError as e:
            return PostOutcome(None, f"{type(e).__name__}: {e}"[:500] if str(e) else type(e).__name__)
    if 200 <= response.status_code < 300:
        return PostOutcome(response.status_code, None)
    return PostOutcome(response.status_code, f"HTTP {response.status_code}")


class WebhookActivities:
    """Activities reaching the delivery service through the shared peer channels."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @activity.defn(name="webhook_attempt")
    async def attempt(self, input: WebhookDeliveryInput) -> str:
        """One attempt: DELIVERED, or GONE/SUPERSEDED (nothing left to do); a failed POST raises
        so that Temporal schedules the next attempt."""
        delivery = self._peers.delivery()
        try:
            target = await delivery.GetWebhookDeliveryTarget(
                pb.GetWebhookDeliveryTargetRequest(delivery_id=input.delivery_id), timeout=RPC_DEADLINE_S
            )
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.NOT_FOUND:
                return GONE
            raise _rpc_error("GetWebhookDeliveryTarget", e) from e
        if target.status != pb.WEBHOOK_DELIVERY_STATUS_PENDING or target.series != input.series:
            return SUPERSEDED
        if not target.endpoint_enabled:
            raise ApplicationError("endpoint disabled", type=DISABLED_ERROR_TYPE, non_retryable=True)
        number = activity.info().attempt
        started = datetime.now(UTC)
        clock = time.monotonic()
        try:
            url = egress.parse_target_url(target.url, allow_private=input.allow_private)
            addresses = await egress.resolve_target(url, allow_private=input.allow_private)
            outcome = await post_signed(url, addresses, target.secret, target.event_id, target.body, input.timeout_s)
        except DomainError as e:  # the URL refused now (rebinding), or the resolver down
            outcome = PostOutcome(None, e.message[:500])
        elapsed = timedelta(seconds=time.monotonic() - clock)
        record = pb.RecordWebhookAttemptRequest(
            delivery_id=input.delivery_id,
            series=input.series,
            attempt=number,
            attempt_time=timestamp(started),
            duration=duration_pb(elapsed),
            status_code=outcome.status_code,
            error=outcome.error,
            succeeded=outcome.succeeded,
        )
        try:
            await delivery.RecordWebhookAttempt(record, timeout=RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.NOT_FOUND:
                return GONE
            raise _rpc_error("RecordWebhookAttempt", e) from e
        log.info(
            "webhook.attempt", delivery_id=input.delivery_id, series=input.series, attempt=number,
            status_code=outcome.status_code, succeeded=outcome.succeeded,
        )
        if outcome.succeeded:
            return DELIVERED
        raise ApplicationError(outcome.error or "attempt failed", type=ATTEMPT_ERROR_TYPE)

    @activity.defn(name="webhook_fail")
    async def fail(self, input: FailInput) -> None:
        request = pb.FailWebhookDeliveryRequest(delivery_id=input.delivery_id, series=input.series, error=input.error)
        try:
            await self._peers.delivery().FailWebhookDelivery(request, timeout=RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.NOT_FOUND:
                return
            raise _rpc_error("FailWebhookDelivery", e) from e


@workflow.defn(name=WEBHOOK_DELIVERY_WORKFLOW)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> str:
        try:
            return await workflow.execute_activity_method(
                WebhookActivities.attempt,
                input,
                # The POST's bound plus resolving and the two calls around it.
                start_to_close_timeout=timedelta(seconds=input.timeout_s + 2 * RPC_DEADLINE_S + 10),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=input.initial_interval_s),
                    backoff_coefficient=3.0,
                    maximum_interval=timedelta(seconds=input.maximum_interval_s),
                    maximum_attempts=input.max_attempts,
                    non_retryable_error_types=[DISABLED_ERROR_TYPE],
                ),
            )
        except ActivityError as e:
            cause = e.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(e)
            if not (isinstance(cause, ApplicationError) and cause.type == DISABLED_ERROR_TYPE):
                reason = f"gave up after {input.max_attempts} attempts: {reason}"
            await workflow.execute_activity_method(
                WebhookActivities.fail,
                FailInput(input.delivery_id, input.series, reason),
                start_to_close_timeout=timedelta(seconds=RPC_DEADLINE_S + 5),
                retry_policy=BOOKKEEPING_RETRY,
                schedule_to_close_timeout=timedelta(days=1),
            )
            return FAILED
