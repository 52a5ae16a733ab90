"""The seven cron jobs of the original backend, plus the redesign's sweeps (outbound leases,
Clerk webhook delivery ids, completion webhook events), as Temporal Schedules upserted at every
worker start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from workflows.sweep import SweepInput, SweepTarget, SweepWorkflow
from zenthor.config import ServiceName
from zenthor.logs import get_logger

log = get_logger("workflows.schedules")

# Every sweep is idempotent and the next tick redoes whatever a missed one would have done,
# so after an outage one catch-up run is plenty; a year of missed ticks (the default) is not.
CATCHUP_WINDOW = timedelta(minutes=1)


def daily_utc(hour: int) -> ScheduleSpec:
    # Calendar defaults are minute 0, second 0, every day.
    return ScheduleSpec(
        calendars=[ScheduleCalendarSpec(hour=(ScheduleRange(hour),))], time_zone_name="UTC"
    )


def every(interval: timedelta) -> ScheduleSpec:
    return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)])


@dataclass(frozen=True)
class ScheduledSweep:
    """One cron job: its exact name from the original (the schedule id), when it runs, what it calls."""

    name: str
    spec: ScheduleSpec
    target: SweepTarget

    @property
    def workflow_id(self) -> str:
        # Temporal appends the scheduled time, so each run gets its own id.
        return "sweep-" + self.name.replace(" ", "-")


SCHEDULES: tuple[ScheduledSweep, ...] = (
    ScheduledSweep(
        "cleanup old jobs", daily_utc(3), SweepTarget(ServiceName.AGENT_QUEUE, "CleanupOldJobs")
    ),
    ScheduledSweep(
        "process scheduled tasks",
        every(timedelta(minutes=5)),
        SweepTarget(ServiceName.AGENT_QUEUE, "ProcessDueScheduledTasks"),
    ),
    ScheduledSweep(
        "cleanup expired verifications",
        daily_utc(4),
        SweepTarget(ServiceName.IDENTITY, "CleanupExpiredPhoneVerifications"),
    ),
    ScheduledSweep(
        "cleanup old dedupe entries",
        daily_utc(5),
        SweepTarget(ServiceName.MESSAGES, "CleanupInboundDedupe"),
    ),
    ScheduledSweep(
        "requeue stale agent jobs",
        every(timedelta(minutes=1)),
        SweepTarget(ServiceName.AGENT_QUEUE, "RequeueStaleJobs"),
    ),
    ScheduledSweep(
        "expire stale tool approvals",
        every(timedelta(minutes=10)),
        SweepTarget(ServiceName.APPROVALS, "ExpireStaleApprovals"),
    ),
    # Not one of the original's seven: the redesign's sweep for outbound leases of accounts no
    # runtime claims from any more (docs/hardening.md #16; claims reclaim their own account inline).
    ScheduledSweep(
        "requeue stale outbound messages",
        every(timedelta(minutes=1)),
        SweepTarget(ServiceName.DELIVERY, "RequeueStaleOutbound"),
    ),
    # The redesign's: svix-ids of Clerk webhook deliveries past the replay window
    # (docs/hardening.md #38).
    ScheduledSweep(
        "cleanup old webhook deliveries",
        daily_utc(6),
        SweepTarget(ServiceName.IDENTITY, "CleanupWebhookDeliveries"),
    ),
    # The redesign's: completion webhook events and their delivery log past 30 days
    # (docs/webhooks.md).
    ScheduledSweep(
        "cleanup old webhook events",
        daily_utc(7),
        SweepTarget(ServiceName.DELIVERY, "CleanupWebhookEvents"),
    ),
    ScheduledSweep(
        "cleanup expired todoist oauth states",
        every(timedelta(hours=1)),
        SweepTarget(ServiceName.TODOIST, "CleanupExpiredTodoistOAuthStates"),
    ),
)


def build_schedule(job: ScheduledSweep, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SweepWorkflow.run,
            SweepInput(target=job.target.name),
            id=job.workflow_id,
            task_queue=task_queue,
        ),
        spec=job.spec,
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
    )


async def upsert_schedules(client: Client, task_queue: str) -> None:
    """Creates each schedule, or brings an existing one to this definition. Safe to run at
    every start, by every replica."""
    for job in SCHEDULES:
        schedule = build_schedule(job, task_queue)
        try:
            await client.create_schedule(job.name, schedule)
            log.info("schedule.created", schedule=job.name, target=job.target.name)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(job.name).update(_keeping_state(schedule))
            log.info("schedule.updated", schedule=job.name, target=job.target.name)


def _keeping_state(schedule: Schedule) -> Callable[[ScheduleUpdateInput], ScheduleUpdate]:
    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        # An operator's pause (and its note) in the Temporal UI survives a worker restart.
        schedule.state = current.description.schedule.state
        return ScheduleUpdate(schedule=schedule)

    return update

