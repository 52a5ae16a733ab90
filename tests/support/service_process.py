"""A service as operators run it, `python -m services.<name>`, in a process of its own: started
on a fixed port, killed with SIGKILL, started again on the same port (crash scenarios)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from tests.support.database import TestDatabase
from tests.support.grpc_client import SERVICE_KEY
from zenthor.clients import health_check, open_channel
from zenthor.config import ServiceName

REPO = Path(__file__).resolve().parents[2]
# A cold interpreter imports grpc, SQLAlchemy and the stubs: seconds, more on a loaded machine.
START_TIMEOUT_S = 90.0
# Nothing listens there: a peer the scenario does not bring stays unreachable.
NOBODY = "127.0.0.1:1"


def service_env(service: ServiceName, db: TestDatabase, **values: str) -> dict[str, str]:
    """The environment of one service process against the test's database."""
    return {
        **os.environ,
        "ZENTHOR_DATABASE_URL": db.dsn_for(service),
        "SERVICE_KEY": SERVICE_KEY,
        "ZENTHOR_GRPC_HOST": "127.0.0.1",
        "ZENTHOR_LOG_FORMAT": "json",
        "ZENTHOR_SHUTDOWN_GRACE_S": "1",
        "TEMPORAL_ADDRESS": NOBODY,
        "ZENTHOR_IDENTITY_ADDR": NOBODY,
        **values,
    }


class ServiceProcess:
    """One service process; its output goes to `log_path` (a pipe nobody reads would fill up)."""

    def __init__(self, service: ServiceName, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.service = service
        self.port = port
        self._env = dict(env)
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Spawns the process and returns once its health check answers SERVING."""
        assert self._proc is None or self._proc.returncode is not None, "already running"
        with self._log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{self.service.value}", "--port", str(self.port),
                cwd=REPO, env=self._env, stdout=log, stderr=log,
            )
        self.starts += 1
        await self._wait_serving()

    async def _wait_serving(self) -> None:
        assert self._proc is not None
        # The kit's channel: it retries a refused connection every 100 ms, not after 1 s, 1.6 s, …
        async with open_channel(self.address, None, deadline_s=1.0) as channel:
            check = health_check(channel)
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    while True:
                        if self._proc.returncode is not None:
                            raise AssertionError(f"{self.service} exited with {self._proc.returncode}: {self.log_tail()}")
                        try:
                            reply = await check(health_pb2.HealthCheckRequest())
                        except grpc.aio.AioRpcError:
                            reply = None
                        if reply is not None and reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise AssertionError(f"{self.service} did not start serving: {self.log_tail()}") from None

    async def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no flushing, connections dropped mid-call."""
        assert self._proc is not None and self._proc.returncode is None, "not running"
        self._proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self._proc.wait(), 30)

    async def restart_after_kill(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within its grace."""
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), 15)
        except TimeoutError:
            self._proc.kill()
            await asyncio.wait_for(self._proc.wait(), 15)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"
