"""The worker's liveness probe (`python -m workflows --alive`) answers from the process itself:
while Temporal is unreachable a running worker stays alive (only readiness, `--check`, fails), so
a Temporal outage does not make Kubernetes restart every worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from tests.support.ports import free_port
from workflows.heartbeat import alive

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0


async def run_to_end(*args: str, env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflows", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), TIMEOUT_S)


async def test_a_worker_without_temporal_is_alive_but_not_ready(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ZENTHOR_LOG_FORMAT": "json",
        "ZENTHOR_SHUTDOWN_GRACE_S": "1",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens: Temporal is down
        "ZENTHOR_WORKER_HEARTBEAT_FILE": str(tmp_path / "alive"),
    }
    assert await run_to_end("--alive", env=env) == 1, "alive before any worker runs"

    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflows", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert worker.stderr is not None
        async with asyncio.timeout(TIMEOUT_S):  # the worker is up and failing to reach Temporal
            while line := await worker.stderr.readline():
                if line.startswith(b"{") and json.loads(line)["event"] == "temporal.unreachable":
                    break
            else:
                raise AssertionError("the worker exited before trying Temporal")
        assert await run_to_end("--alive", env=env) == 0, "liveness failed while Temporal is down"
        assert await run_to_end("--check", env=env) == 1, "readiness passed without Temporal"
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.communicate(), TIMEOUT_S)
    # A stopped worker leaves no heartbeat behind.
    assert await run_to_end("--alive", env=env) == 1


def test_a_stale_heartbeat_is_not_alive(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    path.touch()
    assert alive(path, stale_s=60)
    old = time.time() - 120
    os.utime(path, (old, old))
    assert not alive(path, stale_s=60)
