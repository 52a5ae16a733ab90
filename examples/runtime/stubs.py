"""The four services the runtime calls, over channels that carry the service key."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from examples.runtime.config import Config
from zenthor.clients import open_channel
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc


@dataclass(frozen=True)
class Stubs:
    jobs: agent_queue_pb2_grpc.AgentQueueServiceAsyncStub
    messages: messages_pb2_grpc.MessagesServiceAsyncStub
    approvals: approvals_pb2_grpc.ApprovalsServiceAsyncStub
    delivery: delivery_pb2_grpc.DeliveryServiceAsyncStub
    channels: tuple[grpc.aio.Channel, ...]
    # Server streams carry the key themselves: open_channel's interceptor attaches it to unary
    # calls only.
    stream_metadata: tuple[tuple[str, str], ...]

    @classmethod
    def connect(cls, config: Config) -> Stubs:
        # open_channel adds the x-service-key metadata and a deadline to every unary call.
        def channel(address: str) -> grpc.aio.Channel:
            return open_channel(address, config.service_key, deadline_s=10.0)

        jobs, messages = channel(config.agent_queue_addr), channel(config.messages_addr)
        approvals, delivery = channel(config.approvals_addr), channel(config.delivery_addr)
        return cls(
            jobs=agent_queue_pb2_grpc.AgentQueueServiceStub(jobs),
            messages=messages_pb2_grpc.MessagesServiceStub(messages),
            approvals=approvals_pb2_grpc.ApprovalsServiceStub(approvals),
            delivery=delivery_pb2_grpc.DeliveryServiceStub(delivery),
            channels=(jobs, messages, approvals, delivery),
            stream_metadata=(("x-service-key", config.service_key),) if config.service_key else (),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
