"""The worker process: connect to Temporal (waiting for it), upsert the schedules, run the
workflows and activities until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from workflows.heartbeat import heartbeat
from workflows.metrics import WORKER_RUNNING, install_temporal_metrics
from workflows.retry import RetryActivities, RetryWorkflow
from workflows.scheduled_task import ScheduledTaskActivities, ScheduledTaskWorkflow
from workflows.schedules import upsert_schedules
from workflows.sweep import SweepActivities, SweepWorkflow
from workflows.todoist_oauth import TodoistOAuthActivities, TodoistOAuthWorkflow
from workflows.webhook_delivery import WebhookActivities, WebhookDeliveryWorkflow
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.logs import get_logger
from zenthor.metrics import serve_metrics
from zenthor.tracing import temporal_interceptors

log = get_logger("workflows.worker")

# `make dev` starts Temporal beside the worker; the dev server is up in a few seconds, a
# cluster after a rollout in well under two minutes.
CONNECT_DEADLINE_S = 120.0
CONNECT_BACKOFF_FIRST_S = 0.5
CONNECT_BACKOFF_MAX_S = 10.0
CHECK_TIMEOUT = timedelta(seconds=5)



async def connect(settings: Settings) -> Client:
    """Connects once; raises if Temporal cannot be reached."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        connect_timeout=CHECK_TIMEOUT,
        # With tracing on (zenthor/tracing.py), the worker built from this client traces workflows
        # and activities as children of whoever started them (a service's outbox relay).
        interceptors=temporal_interceptors(settings.tracing_enabled),
    )


class TemporalUnreachable(Exception):
    """Temporal did not answer before the connect deadline."""


async def connect_with_backoff(
    settings: Settings, stop: asyncio.Event, deadline_s: float = CONNECT_DEADLINE_S
) -> Client | None:
    """Retries the connection with capped exponential backoff; None if stopped meanwhile."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline_s
    delay = CONNECT_BACKOFF_FIRST_S
    attempt = 1
    while not stop.is_set():
        try:
            client = await connect(settings)
        except RuntimeError as e:  # the SDK reports a failed connect as RuntimeError
            if loop.time() + delay > give_up_at:
                log.error("temporal.gave_up", address=settings.temporal_address, attempts=attempt)
                raise TemporalUnreachable(settings.temporal_address) from e
            log.warning(
                "temporal.unreachable",
                address=settings.temporal_address,
                attempt=attempt,
                retry_in_s=delay,
                error=str(e),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, CONNECT_BACKOFF_MAX_S)
            attempt += 1
            continue
        log.info("temporal.connected", address=settings.temporal_address, namespace=client.namespace)
        return client
    return None


async def check(settings: Settings) -> bool:
    """Liveness: Temporal is reachable and its workflow service answers."""
    try:
        client = await connect(settings)
        return await client.service_client.check_health(timeout=CHECK_TIMEOUT)
    except (RuntimeError, RPCError) as e:
        log.warning("temporal.unreachable", address=settings.temporal_address, error=str(e))
        return False


def build_worker(client: Client, task_queue: str, peers: Peers, grace: timedelta) -> Worker:
    sweeps = SweepActivities(peers)
    retries = RetryActivities(peers)
    todoist_oauth = TodoistOAuthActivities(peers)
    webhooks = WebhookActivities(peers)
    scheduled_tasks = ScheduledTaskActivities(peers)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[SweepWorkflow, RetryWorkflow, TodoistOAuthWorkflow, ScheduledTaskWorkflow, WebhookDeliveryWorkflow],
        activities=[
            sweeps.sweep,
            retries.call_target,
            todoist_oauth.exchange_code,
            todoist_oauth.discard_state,
            webhooks.attempt,
            webhooks.fail,
            scheduled_tasks.next_run,
            scheduled_tasks.fire,
        ],
        graceful_shutdown_timeout=grace,
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Serves until `stop` is set, then lets running activities finish within the grace."""
    if settings.service_key is None and not settings.dev_insecure:
        log.warning("service_key.missing", note="services will refuse every sweep call")
    beating = asyncio.create_task(heartbeat(stop))
    # Metrics, the SDK's relayed included, before the first client is made (workflows/metrics.py).
    install_temporal_metrics(settings)
    metrics = serve_metrics(settings, process="worker")
    try:
        await _run(settings, stop)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        if metrics is not None:
            metrics.close()


async def _run(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect_with_backoff(settings, stop)
    if client is None:
        return
    await upsert_schedules(client, settings.temporal_task_queue)
    peers = Peers(settings)
    worker = build_worker(
        client, settings.temporal_task_queue, peers, timedelta(seconds=settings.shutdown_grace_s)
    )
    try:
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        log.info("worker.started", task_queue=settings.temporal_task_queue)
        WORKER_RUNNING.set(1)
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        WORKER_RUNNING.set(0)
        stopping.cancel()
        if not running.done():
            log.info("worker.stopping", grace_s=settings.shutdown_grace_s)
            await worker.shutdown()
        await running  # a worker that died on its own re-raises here
    finally:
        await peers.close()
    log.info("worker.stopped")
