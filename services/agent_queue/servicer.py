"""AgentQueueService over gRPC. Its issue has not landed: every RPC answers UNIMPLEMENTED naming itself
(the server's UnbuiltMethodInterceptor), never a fake success."""

from __future__ import annotations

from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc


class AgentQueueServicer(agent_queue_pb2_grpc.AgentQueueServiceServicer):
    pass
