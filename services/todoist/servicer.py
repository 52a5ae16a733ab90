"""TodoistService over gRPC. Its issue has not landed: every RPC answers UNIMPLEMENTED naming itself
(the server's UnbuiltMethodInterceptor), never a fake success."""

from __future__ import annotations

from zenthor.gen.zenthor.todoist.v1 import todoist_pb2_grpc


class TodoistServicer(todoist_pb2_grpc.TodoistServiceServicer):
    pass
