"""DeliveryService over gRPC. Its issue has not landed: every RPC answers UNIMPLEMENTED naming itself
(the server's UnbuiltMethodInterceptor), never a fake success."""

from __future__ import annotations

from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    pass
