"""`python -m workflows` with ZENTHOR_LOG_FORMAT=json writes nothing but JSON lines, the
Temporal SDK's own loggers included (zenthor/logs.py)."""

from __future__ import annotations

import asyncio
import signal
import sys

from tests.e2e.test_json_logs import json_lines
from tests.workflows.conftest import PROCESS_NAMESPACE
from tests.workflows.test_worker_process import REPO, STARTUP_TIMEOUT_S, worker_env
from workflows.schedules import SCHEDULES


async def test_every_line_of_the_worker_process_is_json_the_sdks_included(
    temporal_address: str, task_queue: str
) -> None:
    env = worker_env(
        TEMPORAL_ADDRESS=temporal_address,
        TEMPORAL_NAMESPACE=PROCESS_NAMESPACE,
        TEMPORAL_TASK_QUEUE=task_queue,
        ZENTHOR_TRACING="1",
        OTEL_TRACES_EXPORTER="none",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflows", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None and process.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while b'"worker.started"' not in (line := await process.stderr.readline()):
                assert line, f"the worker exited: {seen.decode()}"
                seen += line
            seen += line
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            process.send_signal(signal.SIGTERM)
            err, out = await asyncio.gather(process.stderr.read(), process.stdout.read())
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        from temporalio.client import Client

        client = await Client.connect(temporal_address, namespace=PROCESS_NAMESPACE)
        for job in SCHEDULES:
            try:
                await client.get_schedule_handle(job.name).delete()
            except Exception:  # not created when the worker failed early
                pass

    lines = json_lines(seen + err, "stderr") + json_lines(out, "stdout")
    events = [line["event"] for line in lines]
    assert "worker.stopped" in events
    # The SDK's stdlib loggers (its worker's shutdown lines) went through the same formatter.
    assert any(line.get("logger", "").startswith("temporalio") for line in lines), lines
