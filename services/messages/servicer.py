"""MessagesService over gRPC. Its issue has not landed: every RPC answers UNIMPLEMENTED naming itself
(the server's UnbuiltMethodInterceptor), never a fake success."""

from __future__ import annotations

from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc


class MessagesServicer(messages_pb2_grpc.MessagesServiceServicer):
    pass
