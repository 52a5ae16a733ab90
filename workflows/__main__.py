"""`python -m workflows`: run the Temporal worker, or `--check` that Temporal is reachable."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from workflows import worker
from zenthor.config import Settings
from zenthor.logs import configure_logging


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
        help="connect to Temporal once and exit 0 if it answers, 1 if not (liveness probe)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, service="workflows")
    if args.check:
        return 0 if asyncio.run(worker.check(settings)) else 1
    try:
        asyncio.run(_serve(settings))
    except worker.TemporalUnreachable:
        return 1  # already logged
    return 0


async def _serve(settings: Settings) -> None:
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
