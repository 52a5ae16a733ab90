"""An agent worker process for the agent_queue crash scenario: claims jobs and completes them,
over and over, until SIGTERM; rides out a server restart by retrying UNAVAILABLE and
DEADLINE_EXCEEDED. Prints one JSON line per outcome (its log).

    python -m tests.support.queue_worker ADDR PROCESSOR_ID LEASE_S
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import grpc
from google.protobuf.duration_pb2 import Duration

from tests.support.grpc_client import service
from tests.support.retrying_client import IDEMPOTENT_RETRY, RetryingClient
from zenthor.clients import open_channel
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

CLAIM_BATCH = 4
IDLE_PAUSE_S = 0.05
CALL_DEADLINE_S = 5.0


def say(**values: object) -> None:
    print(json.dumps(values), flush=True)


async def work(stub: agent_queue_pb2_grpc.AgentQueueServiceStub, processor_id: str, lease: Duration) -> None:
    # A claim that timed out may have been applied; its jobs come back after the lease.
    client = RetryingClient(retry_on=IDEMPOTENT_RETRY, give_up_s=600)
    while True:
        reply = await client.call(
            lambda: stub.ClaimJobs(
                pb.ClaimJobsRequest(processor_id=processor_id, max_jobs=CLAIM_BATCH, lease=lease),
                metadata=service(), timeout=CALL_DEADLINE_S,
            )
        )
        if not reply.jobs:
            await asyncio.sleep(IDLE_PAUSE_S)
            continue
        for job in reply.jobs:
            say(claimed=job.id)
            try:
                await client.call(
                    lambda job=job: stub.CompleteJob(
                        pb.CompleteJobRequest(job_id=job.id, processor_id=processor_id, model_used="crash-test"),
                        metadata=service(), timeout=CALL_DEADLINE_S,
                    )
                )
            except grpc.aio.AioRpcError as e:
                # A repeat of a completion the server had committed, or a lease that lapsed
                # while the server was down: the job's row says which.
                say(refused=job.id, code=e.code().name)
            else:
                say(completed=job.id)


async def main(addr: str, processor_id: str, lease_s: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    lease = Duration()
    lease.FromMilliseconds(int(lease_s * 1000))
    async with open_channel(addr, None, deadline_s=CALL_DEADLINE_S) as channel:
        worker = asyncio.create_task(work(agent_queue_pb2_grpc.AgentQueueServiceStub(channel), processor_id, lease))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        worker.cancel()
        stopping.cancel()
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            raise SystemExit(f"worker failed: {worker.exception()!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
