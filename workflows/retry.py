"""RetryWorkflow: waits a backoff, then asks the owning service to release the entity
(`zenthor.retries` stores its start in the service's outbox; the id `retry-<id>-<attempt>`
makes a second start a no-op)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import grpc
    from google.protobuf import json_format

    from zenthor.clients import Peers, UnaryMethod
    from zenthor.config import ServiceName
    from zenthor.errors import is_permanent
    from zenthor.logs import get_logger
    from zenthor.retries import RETRY_WORKFLOW, RetryInput

log = get_logger("workflows.retry")

TARGET_RPC_DEADLINE_S = 30.0


def _resolve(peers: Peers, target: str) -> UnaryMethod:
    """`agent_queue.ReleaseJob` → that unary RPC; anything else fails the run for good."""
    service_name, _, rpc = target.partition(".")
    try:
        return peers.unary_method(ServiceName(service_name), rpc)
    except (ValueError, KeyError):
        raise ApplicationError(f"{target!r} is not a unary RPC of a service", type="InvalidRetryTarget", non_retryable=True) from None


class RetryActivities:
    """Activities that reach services through the shared peer channels."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @activity.defn(name="call_retry_target")
    async def call_target(self, input: RetryInput) -> dict[str, Any]:
        """One call of the target RPC; its response as proto JSON."""
        method = _resolve(self._peers, input.target)
        try:
            request = json_format.ParseDict(input.request, method.request_type())
        except json_format.ParseError as e:
            raise ApplicationError(f"{input.target}: bad request: {e}", type="InvalidRetryRequest", non_retryable=True) from e
        try:
            response = await method.call(request, timeout=TARGET_RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            raise ApplicationError(
                f"{input.target}: {code.name}: {e.details()}", type=f"grpc.{code.name}", non_retryable=is_permanent(code)
            ) from e
        log.info("retry.target_called", target=input.target)
        result: dict[str, Any] = json_format.MessageToDict(response)
        return result


@workflow.defn(name=RETRY_WORKFLOW)
class RetryWorkflow:
    @workflow.run
    async def run(self, input: RetryInput) -> dict[str, Any]:
        if input.delay_s > 0:
            await workflow.sleep(timedelta(seconds=input.delay_s))
        return await workflow.execute_activity_method(
            RetryActivities.call_target,
            input,
            start_to_close_timeout=timedelta(seconds=60),
            # A service down for a long outage is still released when it returns; a day
            # bounds a target that never comes back.
            schedule_to_close_timeout=timedelta(days=1),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(minutes=1),
            ),
        )
