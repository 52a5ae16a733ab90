"""SweepWorkflow: one scheduled run of a service's batched sweep RPC, called until it says
there is nothing more to do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import grpc

    from zenthor.clients import Peers, UnaryMethod
    from zenthor.config import ServiceName
    from zenthor.errors import is_permanent
    from zenthor.logs import get_logger

log = get_logger("workflows.sweep")

DEFAULT_BATCH_SIZE = 500
# One run handles at most this many batches (50 000 rows at the default size); the rest
# waits for the next tick, so a huge backlog never holds one activity for hours.
MAX_BATCHES_PER_RUN = 100
# A batch is one short transaction; 30 s leaves room for a cold pool, and stays well under
# the heartbeat timeout below.
SWEEP_RPC_DEADLINE_S = 30.0



@dataclass(frozen=True)
class SweepTarget:
    """A batched sweep RPC of one service: takes `batch_size`, answers counts and `more`."""

    service: ServiceName
    rpc: str

    @property
    def name(self) -> str:
        return f"{self.service.value}.{self.rpc}"

    @classmethod
    def parse(cls, name: str) -> SweepTarget:
        service, _, rpc = name.partition(".")
        try:
            return cls(ServiceName(service), rpc)
        except ValueError:
            raise ValueError(f"unknown service in sweep target {name!r}") from None


@dataclass
class SweepInput:
    target: str  # SweepTarget.name, e.g. "agent_queue.CleanupOldJobs"
    batch_size: int = DEFAULT_BATCH_SIZE


SweepCounts = dict[str, int]


class SweepActivities:
    """Activities that reach services through the shared peer channels."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @activity.defn(name="sweep")
    async def sweep(self, input: SweepInput) -> SweepCounts:
        """Calls the target until `more` is false (bounded); returns the summed counts and
        the number of calls. A retried attempt resumes the counts from its last heartbeat."""
        target, method = _resolve(self._peers, input.target)
        details = activity.info().heartbeat_details
        counts: SweepCounts = dict(details[0]) if details else {"calls": 0}
        for _ in range(MAX_BATCHES_PER_RUN):
            try:
                response = await method.call(
                    method.request_type(batch_size=input.batch_size), timeout=SWEEP_RPC_DEADLINE_S
                )
            except grpc.aio.AioRpcError as e:
                raise _application_error(target, e) from e
            counts["calls"] += 1
            more = False
            for field in response.DESCRIPTOR.fields:
                value = getattr(response, field.name)
                if field.name == "more":
                    more = bool(value)
                else:
                    counts[field.name] = counts.get(field.name, 0) + value
            activity.heartbeat(dict(counts))  # a copy: details are encoded later
            if not more:
                break
        else:
            log.warning("sweep.bounded", target=target.name, counts=counts)
        log.info("sweep.done", target=target.name, counts=counts)
        return counts


def _resolve(peers: Peers, name: str) -> tuple[SweepTarget, UnaryMethod]:
    """The target and its RPC; a name that is not a sweep RPC is permanent."""
    try:
        target = SweepTarget.parse(name)
        method = peers.unary_method(target.service, target.rpc)
    except (ValueError, KeyError) as e:
        raise ApplicationError(f"{name} is not a sweep RPC: {e}", type="InvalidSweepTarget", non_retryable=True) from e
    fields = method.request_type.DESCRIPTOR.fields_by_name
    if "batch_size" not in fields or "more" not in method.response_type.DESCRIPTOR.fields_by_name:
        raise ApplicationError(
            f"{name} is not a sweep RPC (needs batch_size in, more out)",
            type="InvalidSweepTarget",
            non_retryable=True,
        )
    return target, method


def _application_error(target: SweepTarget, error: grpc.aio.AioRpcError) -> ApplicationError:
    code = error.code()
    return ApplicationError(
        f"{target.name}: {code.name}: {error.details()}",
        type=f"grpc.{code.name}",
        non_retryable=is_permanent(code),
    )


@workflow.defn
class SweepWorkflow:
    @workflow.run
    async def run(self, input: SweepInput) -> SweepCounts:
        return await workflow.execute_activity_method(
            SweepActivities.sweep,
            input,
            # 100 batches of short transactions; the heartbeat catches a hung worker sooner.
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=1),
            # Bounded: with overlap SKIP a run retrying forever would block every later tick.
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
            ),
        )
