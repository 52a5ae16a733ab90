"""The reference runtime's job loop (examples/runtime) run in-process against real servers, its
agent_queue calls recorded in order, for tests that need a real worker answering jobs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from examples.runtime.config import Config
from examples.runtime.jobs import JobLoop
from examples.runtime.responder import EchoResponder
from examples.runtime.stubs import Stubs
from tests.support.grpc_client import SERVICE_KEY


class RecordingJobs:
    """The runtime's agent_queue stub, recording in order what the worker heard and said."""

    def __init__(self, stub: Any, log: list[str]) -> None:
        self._stub = stub
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    async def HeartbeatJob(self, request: Any, **kwargs: Any) -> Any:
        reply = await self._stub.HeartbeatJob(request, **kwargs)
        self._log.append("heartbeat:cancel" if reply.cancel_requested else "heartbeat")
        return reply

    async def FailJob(self, request: Any, **kwargs: Any) -> Any:
        self._log.append(f"fail:{request.error_reason}")
        return await self._stub.FailJob(request, **kwargs)

    async def CompleteJob(self, request: Any, **kwargs: Any) -> Any:
        self._log.append("complete")
        return await self._stub.CompleteJob(request, **kwargs)


@asynccontextmanager
async def running_runtime(
    agent_queue_port: int,
    messages_port: int,
    *,
    chunk_delay_s: float,
    lease_s: float = 3.0,
    approvals_port: int | None = None,
) -> AsyncIterator[list[str]]:
    """A runtime with a short lease (a heartbeat every third of it) answering with the echo,
    `chunk_delay_s` per word (and asking `approvals_port`'s server for `/approve` messages);
    yields its call log, and stops it (bounded) on exit."""
    env = {
        "ZENTHOR_AGENT_QUEUE_ADDR": f"127.0.0.1:{agent_queue_port}",
        "ZENTHOR_MESSAGES_ADDR": f"127.0.0.1:{messages_port}",
        "SERVICE_KEY": SERVICE_KEY,
        "WORKER_ID": "runtime-under-test",
        "ZENTHOR_RUNTIME_LEASE_S": str(lease_s),
        "ENABLE_WHATSAPP": "false",
    }
    if approvals_port is not None:
        env["ZENTHOR_APPROVALS_ADDR"] = f"127.0.0.1:{approvals_port}"
    config = Config.from_env(env)
    log: list[str] = []
    stubs = Stubs.connect(config)
    stubs = dataclasses.replace(stubs, jobs=RecordingJobs(stubs.jobs, log))
    loop = JobLoop(config, stubs, EchoResponder(chunk_delay_s=chunk_delay_s))
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    try:
        yield log
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
        await stubs.close()
