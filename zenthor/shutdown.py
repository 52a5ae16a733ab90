"""Bounded shutdown: every step of stopping a process ends within a time limit.

A peer call that hangs, a connection whose close never completes, or a background task that
swallows its cancellation must not keep a process — or a test's fixture teardown, which runs
the same `GrpcServer.stop` — from finishing. A step that overruns is logged and left behind;
the next step still runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from zenthor.logs import get_logger

log = get_logger("zenthor.shutdown")

# Background loops (relay, change feed, broadcasts) end at their next await once cancelled:
# milliseconds. Seconds mean one is stuck.
TASK_STOP_TIMEOUT_S = 5.0
# A resource's close (a connection pool, peer channels): quick unless the far side hangs.
STEP_TIMEOUT_S = 10.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, what: str, timeout_s: float | None = None) -> None:
    """Cancels `tasks` and waits at most `timeout_s` for them to end. A task still running then
    ignored its cancellation: logged, not awaited. A task that had failed is logged too (its
    error was nobody else's to see)."""
    timeout_s = TASK_STOP_TIMEOUT_S if timeout_s is None else timeout_s
    tasks = list(tasks)
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    stuck: set[asyncio.Task[Any]] = set()
    if running:
        _, stuck = await asyncio.wait(running, timeout=timeout_s)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("shutdown.task_failed", what=what, task=task.get_name(), exc_info=task.exception())
    if stuck:
        log.error("shutdown.task_stuck", what=what, tasks=sorted(t.get_name() for t in stuck), timeout_s=timeout_s)


async def bounded_step(step: Awaitable[Any], *, what: str, timeout_s: float | None = None) -> None:
    """Runs one shutdown step for at most `timeout_s` (STEP_TIMEOUT_S by default); an overrun
    or an error is logged and the caller goes on with the next step."""
    timeout_s = STEP_TIMEOUT_S if timeout_s is None else timeout_s
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.error("shutdown.step_timed_out", what=what, timeout_s=timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        log.error("shutdown.step_failed", what=what, exc_info=task.exception())
