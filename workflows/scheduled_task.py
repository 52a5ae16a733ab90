"""ScheduledTaskWorkflow: one per enabled scheduled task (`scheduled-task-<task id>`), firing
each run at its instant in Temporal's time (docs/architecture.md §8, "Scheduled tasks").

    read the task ──► sleep until its next run ──► FireScheduledTask(run) ──► the next run …
         ▲             (or until `refresh`)          (fires only if still the next run)
         └──────────── `refresh` signal: the task changed (outbox of agent_queue) ────┘

The agent_queue service starts it (signal-with-start) when a task is created or enabled, and
signals it when its schedule changes or it is disabled or deleted; the workflow never holds
the schedule itself, it re-reads the task, so signals may come in any order or twice. It ends
when the task is gone, disabled or has no next run, and continues as new every
MAX_FIRES_PER_RUN runs to keep its history short. Which instant a run fires at is computed by
the service (services/agent_queue/domain/tasks.py: next_run), never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import grpc

    from zenthor.clients import Peers
    from zenthor.convert import timestamp
    from zenthor.errors import is_permanent
    from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb

# The names the agent_queue service starts and signals it by (services/agent_queue/peers.py).
SCHEDULED_TASK_WORKFLOW = "ScheduledTaskWorkflow"
REFRESH_SIGNAL = "refresh"
# Runs a workflow run attempts before it continues as new: about ten history events each.
MAX_FIRES_PER_RUN = 100
TASK_RPC_DEADLINE_S = 30.0
# The service down for a while delays a run, it never loses it: retried without a cap, every
# minute at most; a permanent answer (a bad request, a wrong key) fails the activity at once.
TASK_RPC_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@dataclass
class ScheduledTaskInput:
    task_id: str  # `task_…`
    max_fires_per_run: int = MAX_FIRES_PER_RUN


@dataclass
class TaskRun:
    """What the workflow needs of a task: whether it still runs, and when next (ISO 8601,
    UTC; None: no next run)."""

    exists: bool
    enabled: bool = False
    next_run: str | None = None
    fired: bool = False

    @property
    def runs(self) -> bool:
        return self.exists and self.enabled and self.next_run is not None


@dataclass
class FireInput:
    task_id: str
    run_time: str  # ISO 8601: the run's instant, the task's next run as last read


@dataclass
class ScheduledTaskResult:
    """Why the workflow ended (`gone`, `disabled`, `finished`: no next run), and how many
    runs this workflow run fired."""

    end: str
    fired: int


def _task_run(task: pb.ScheduledTask, fired: bool = False) -> TaskRun:
    next_run = task.next_run_time.ToDatetime(tzinfo=UTC).isoformat() if task.HasField("next_run_time") else None
    return TaskRun(exists=True, enabled=task.enabled, next_run=next_run, fired=fired)


def _application_error(rpc: str, error: grpc.aio.AioRpcError) -> ApplicationError:
    code = error.code()
    return ApplicationError(f"{rpc}: {code.name}: {error.details()}", type=f"grpc.{code.name}", non_retryable=is_permanent(code))


class ScheduledTaskActivities:
    """Activities reaching the agent_queue service through the shared peer channels."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @activity.defn(name="scheduled_task_next_run")
    async def next_run(self, task_id: str) -> TaskRun:
        request = pb.GetScheduledTaskNextRunRequest(id=task_id)
        try:
            reply = await self._peers.agent_queue().GetScheduledTaskNextRun(request, timeout=TASK_RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return TaskRun(exists=False)
            raise _application_error("GetScheduledTaskNextRun", e) from e
        return _task_run(reply.task)

    @activity.defn(name="scheduled_task_fire")
    async def fire(self, input: FireInput) -> TaskRun:
        request = pb.FireScheduledTaskRequest(id=input.task_id, run_time=timestamp(datetime.fromisoformat(input.run_time)))
        try:
            reply = await self._peers.agent_queue().FireScheduledTask(request, timeout=TASK_RPC_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return TaskRun(exists=False)
            raise _application_error("FireScheduledTask", e) from e
        return _task_run(reply.task, fired=reply.fired)


@workflow.defn(name=SCHEDULED_TASK_WORKFLOW)
class ScheduledTaskWorkflow:
    def __init__(self) -> None:
        self._refresh = False

    @workflow.signal(name=REFRESH_SIGNAL)
    def refresh(self) -> None:
        self._refresh = True

    @workflow.run
    async def run(self, input: ScheduledTaskInput) -> ScheduledTaskResult:
        fired = attempted = 0
        task = await self._read(input.task_id)
        while True:
            if self._refresh:
                task = await self._read(input.task_id)
                continue
            if not task.runs:
                return ScheduledTaskResult(end=_end(task), fired=fired)
            assert task.next_run is not None
            run_time = task.next_run
            delay = datetime.fromisoformat(run_time) - workflow.now()
            if delay > timedelta(0):
                try:
                    await workflow.wait_condition(lambda: self._refresh, timeout=delay)
                    continue  # the task changed while we slept: read it again
                except TimeoutError:
                    pass
            task = await workflow.execute_activity_method(
                ScheduledTaskActivities.fire,
                FireInput(task_id=input.task_id, run_time=run_time),
                start_to_close_timeout=timedelta(seconds=TASK_RPC_DEADLINE_S + 10),
                retry_policy=TASK_RPC_RETRY,
            )
            attempted += 1
            if task.fired:
                fired += 1
            elif task.runs and task.next_run == run_time:
                # Not fired, yet still due at the same instant: only a service that disagrees
                # with itself answers this. Stop rather than spin; the sweep fires the task.
                workflow.logger.warning("scheduled task %s: run %s neither fired nor moved", input.task_id, run_time)
                return ScheduledTaskResult(end="stuck", fired=fired)
            if attempted >= input.max_fires_per_run or workflow.info().is_continue_as_new_suggested():
                # The new run reads the task first, so a signal that arrives meanwhile is not lost.
                workflow.continue_as_new(input)

    async def _read(self, task_id: str) -> TaskRun:
        # Cleared before the read: a change committed after it signals again.
        self._refresh = False
        return await workflow.execute_activity_method(
            ScheduledTaskActivities.next_run,
            task_id,
            start_to_close_timeout=timedelta(seconds=TASK_RPC_DEADLINE_S + 10),
            retry_policy=TASK_RPC_RETRY,
        )


def _end(task: TaskRun) -> str:
    if not task.exists:
        return "gone"
    return "disabled" if not task.enabled else "finished"

