"""ApprovalsService over gRPC. Its issue has not landed: every RPC answers UNIMPLEMENTED naming itself
(the server's UnbuiltMethodInterceptor), never a fake success."""

from __future__ import annotations

from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc


class ApprovalsServicer(approvals_pb2_grpc.ApprovalsServiceServicer):
    pass
