"""`python -m workflows`: run the Temporal worker, `--check` that Temporal is reachable (readiness),
or `--alive` that a running worker's heartbeat is fresh (liveness)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

from workflows.heartbeat import alive

if TYPE_CHECKING:
    from zenthor.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflows",
        description="Zenthor Temporal worker: upserts the cron schedules and runs the sweep "
        "workflows. Configured by environment variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, "
        "TEMPORAL_TASK_QUEUE, SERVICE_KEY, ZENTHOR_<SERVICE>_ADDR, …).",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="connect to Temporal once and exit 0 if it answers, 1 if not (readiness probe)",
    )
    parser.add_argument(
        "--alive",
        action="store_true",
        help="exit 0 if a running worker's heartbeat is fresh, 1 if not (liveness probe; "
        "does not contact Temporal)",
    )
    args = parser.parse_args(argv)
    if args.alive:  # the liveness probe: answered before Temporal's SDK is even imported
        return 0 if alive() else 1
    from workflows import worker
    from zenthor.config import Settings
    from zenthor.logs import configure_logging, forward_temporal_core_logs
    from zenthor.tracing import configure_tracing, flush_tracing

    settings = Settings()
    configure_logging(
        settings.log_level, settings.log_format, service="workflows", trace_ids=settings.tracing_enabled
    )
    forward_temporal_core_logs()  # before any Temporal client: Core's lines are JSON lines too
    if args.check:
        return 0 if asyncio.run(worker.check(settings)) else 1
    configure_tracing(settings, "workflows")
    try:
        asyncio.run(_serve(settings))
    except worker.TemporalUnreachable:
        return 1  # already logged
    finally:
        flush_tracing()  # the process ends with os._exit: export what is batched
    return 0


async def _serve(settings: Settings) -> None:
    from workflows import worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(settings, stop)


if __name__ == "__main__":
    code = main()
    # Temporal's Rust threads can abort interpreter teardown (temporalio/sdk-python#300),
    # turning a clean exit into SIGABRT; a probe must see the real code, so skip teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
