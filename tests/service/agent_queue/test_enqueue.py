"""EnqueueJob (the messages outbox's target) and GetJob."""

from __future__ import annotations

import asyncio

import grpc

from tests.service.conftest import Running
from tests.support.agent_queue_builders import T0, conv, conv_id, msg_id
from tests.support.grpc_client import rpc_error, service
from zenthor import ids
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb


async def test_enqueue_creates_a_pending_job_for_the_message(agent_queue: Running) -> None:
    conversation, message, user = conv(), msg_id(), ids.USER.format(ids.USER.new())
    reply = await agent_queue.stub.EnqueueJob(
        pb.EnqueueJobRequest(message_id=message, conversation_id=conv_id(conversation), conversation_user_id=user),
        metadata=service(),
    )
    assert reply.created
    job = reply.job
    assert job.id.startswith("job_") and job.message_id == message and job.conversation_id == conv_id(conversation)
    assert job.status == pb.JOB_STATUS_PENDING and job.attempt_count == 0
    assert job.create_time.ToDatetime().timestamp() == T0.timestamp()
    assert not job.HasField("processor_id") and not job.HasField("lease_expire_time")

    got = await agent_queue.stub.GetJob(pb.GetJobRequest(id=job.id), metadata=service())
    assert got.job == job


async def test_replayed_enqueue_returns_the_existing_job_unchanged(agent_queue: Running) -> None:
    request = pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(conv()))
    first = await agent_queue.stub.EnqueueJob(request, metadata=service())
    replies = await asyncio.gather(*(agent_queue.stub.EnqueueJob(request, metadata=service()) for _ in range(10)))
    assert {r.job.id for r in replies} == {first.job.id}
    assert not any(r.created for r in replies)
    assert agent_queue.db.sql("SELECT count(*) FROM agent_queue.jobs") == [(1,)]


async def test_concurrent_first_deliveries_make_one_job(agent_queue: Running) -> None:
    request = pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(conv()))
    replies = await asyncio.gather(*(agent_queue.stub.EnqueueJob(request, metadata=service()) for _ in range(20)))
    assert sum(r.created for r in replies) == 1
    assert len({r.job.id for r in replies}) == 1


async def test_enqueue_rejects_malformed_ids_naming_the_field(agent_queue: Running) -> None:
    error = await rpc_error(
        agent_queue.stub.EnqueueJob(
            pb.EnqueueJobRequest(message_id="conv_" + "0" * 32, conversation_id=conv_id(conv())), metadata=service()
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "message_id" in (error.details() or "")


async def test_enqueue_needs_the_service_key(agent_queue: Running) -> None:
    error = await rpc_error(
        agent_queue.stub.EnqueueJob(pb.EnqueueJobRequest(message_id=msg_id(), conversation_id=conv_id(conv())))
    )
    assert error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_get_of_an_unknown_job_returns_no_job(agent_queue: Running) -> None:
    reply = await agent_queue.stub.GetJob(pb.GetJobRequest(id="job_" + "0" * 32), metadata=service())
    assert not reply.HasField("job")
