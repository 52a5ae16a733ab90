"""A minimal agent worker process for crash tests: claims one job over gRPC, prints what it
got as a JSON line, then either completes it or hangs mid-job until killed.

    python -m tests.support.agent_queue_worker ADDR PROCESSOR_ID {hang,complete} LEASE_S
"""

from __future__ import annotations

import asyncio
import json
import sys

from google.protobuf.duration_pb2 import Duration

from tests.support.grpc_client import service
from zenthor.clients import open_channel
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc


def say(**values: object) -> None:
    print(json.dumps(values), flush=True)


async def main(addr: str, processor_id: str, mode: str, lease_s: float) -> None:
    channel = open_channel(addr, None, deadline_s=10.0)
    stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
    lease = Duration()
    lease.FromMilliseconds(int(lease_s * 1000))
    reply = await stub.ClaimJobs(
        pb.ClaimJobsRequest(processor_id=processor_id, max_jobs=1, lease=lease), metadata=service()
    )
    if not reply.jobs:
        say(claimed=None)
        return
    job = reply.jobs[0]
    say(claimed=job.id, attempt_count=job.attempt_count)
    if mode == "hang":
        await asyncio.Event().wait()  # "generating" until SIGKILL
    done = await stub.CompleteJob(
        pb.CompleteJobRequest(job_id=job.id, processor_id=processor_id, model_used="test-model"), metadata=service()
    )
    say(completed=done.job.id)
    await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
