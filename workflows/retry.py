"""RetryWorkflow: waits a backoff, then asks the owning service to release the entity
(`zenthor.retries` stores its start in the service's outbox; the id `retry-<id>-<attempt>`
makes a second start a no-op)."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import grpc
    from google.protobuf import json_format

    from zenthor.clients import Peers
    from zenthor.config import ServiceName
    from zenthor.logs import get_logger
    from zenthor.retries import RETRY_WORKFLOW, RetryInput

log = get_logger("workflows.retry")

TARGET_RPC_DEADLINE_S = 30.0
# What no retry can fix: a request the service refuses, an unbuilt RPC, a wrong key. The run
# fails at once so the Temporal UI shows why. Everything else (UNAVAILABLE while the service
# restarts, DEADLINE_EXCEEDED, INTERNAL…) is retried.
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


def _resolve(target: str) -> tuple[ServiceName, str, type[Any]]:
    """`agent_queue.ReleaseJob` → the service, the RPC and its request class."""
    service_name, _, rpc = target.partition(".")
    try:
        service = ServiceName(service_name)
    except ValueError:
        raise ApplicationError(f"unknown service in retry target {target!r}", type="InvalidRetryTarget", non_retryable=True) from None
    pb2 = importlib.import_module(f"zenthor.gen.zenthor.{service.value}.v1.{service.value}_pb2")
    (descriptor,) = pb2.DESCRIPTOR.services_by_name.values()
    method = descriptor.methods_by_name.get(rpc)
    if method is None or method.server_streaming:
        raise ApplicationError(f"{target} is not a unary RPC", type="InvalidRetryTarget", non_retryable=True)
    return service, rpc, getattr(pb2, method.input_type.name)


class RetryActivities:
    """Activities that reach services through the shared peer channels."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @activity.defn(name="call_retry_target")
    async def call_target(self, input: RetryInput) -> dict[str, Any]:
        """One call of the target RPC; its response as proto JSON."""
        service, rpc, request_class = _resolve(input.target)
        try:
            request = json_format.ParseDict(input.request, request_class())
        except json_format.ParseError as e:
            raise ApplicationError(f"{input.target}: bad request: {e}", type="InvalidRetryRequest", non_retryable=True) from e
        try:
            response = await getattr(self._peers.stub(service), rpc)(request, timeout=TARGET_RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            raise ApplicationError(
                f"{input.target}: {code.name}: {e.details()}", type=f"grpc.{code.name}", non_retryable=code in PERMANENT_CODES
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
