"""`python -m workflows` as operators and Kubernetes run it: a real process, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow

from tests.support.grpc_client import SERVICE_KEY
from tests.support.ports import free_port
from tests.workflows.conftest import PROCESS_NAMESPACE
from workflows.__main__ import main
from workflows.schedules import SCHEDULES

REPO = Path(__file__).resolve().parents[2]
# The first worker start hashes every loaded module for its build id: seconds, not minutes.
STARTUP_TIMEOUT_S = 60.0


def worker_env(**values: str) -> dict[str, str]:
    return {
        **os.environ,
        "ZENTHOR_LOG_FORMAT": "json",
        "SERVICE_KEY": SERVICE_KEY,
        "ZENTHOR_SHUTDOWN_GRACE_S": "1",
        **values,
    }


async def run_to_end(*args: str, env: Mapping[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflows", *args, cwd=REPO, env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), STARTUP_TIMEOUT_S)
    return proc.returncode or 0, out.decode()


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def wait_for_event(self, name: str) -> dict[str, Any]:
        """Reads the JSON log lines until one carries `name`."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while line := await self.proc.stderr.readline():
                if line.startswith(b"{"):
                    self.events.append(json.loads(line))
                    if self.events[-1]["event"] == name:
                        return self.events[-1]
        raise AssertionError(f"worker exited before logging {name}: {self.events}")

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        rest = await asyncio.wait_for(self.proc.stderr.read(), STARTUP_TIMEOUT_S)
        self.events += [json.loads(line) for line in rest.splitlines() if line.startswith(b"{")]
        return await self.proc.wait()


@asynccontextmanager
async def worker_process(env: Mapping[str, str]) -> AsyncIterator[WorkerProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflows", cwd=REPO, env=dict(env), stderr=asyncio.subprocess.PIPE
    )
    try:
        yield WorkerProcess(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "--check" in capsys.readouterr().out


async def test_check_exits_zero_when_temporal_answers(temporal_address: str) -> None:
    code, out = await run_to_end("--check", env=worker_env(TEMPORAL_ADDRESS=temporal_address))
    assert code == 0, out


async def test_check_exits_one_when_temporal_is_down() -> None:
    code, out = await run_to_end(
        "--check", env=worker_env(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    )
    assert code == 1, out
    assert "temporal.unreachable" in out


async def test_worker_upserts_the_schedules_serves_and_stops_on_sigterm(
    temporal_address: str, task_queue: str
) -> None:
    env = worker_env(
        TEMPORAL_ADDRESS=temporal_address,
        TEMPORAL_NAMESPACE=PROCESS_NAMESPACE,
        TEMPORAL_TASK_QUEUE=task_queue,
    )
    client = await Client.connect(temporal_address, namespace=PROCESS_NAMESPACE)
    try:
        async with worker_process(env) as worker:
            started = await worker.wait_for_event("worker.started")
            assert started["task_queue"] == task_queue
            for job in SCHEDULES:
                action = (await client.get_schedule_handle(job.name).describe()).schedule.action
                assert isinstance(action, ScheduleActionStartWorkflow)
                assert action.task_queue == task_queue

            assert await worker.terminate() == 0
        # Our own lines (library lines, such as the SDK's shutdown notice, carry a `logger`).
        assert [e["event"] for e in worker.events if "logger" not in e][-2:] == ["worker.stopping", "worker.stopped"]
    finally:
        for job in SCHEDULES:
            await client.get_schedule_handle(job.name).delete()


async def test_worker_waits_for_temporal_and_still_stops_on_sigterm() -> None:
    env = worker_env(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    async with worker_process(env) as worker:
        waiting = await worker.wait_for_event("temporal.unreachable")
        assert waiting["attempt"] == 1

        assert await worker.terminate() == 0
    assert "worker.started" not in [e["event"] for e in worker.events]
