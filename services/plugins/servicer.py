"""PluginsService over gRPC. Its issue has not landed: every RPC answers UNIMPLEMENTED naming itself
(the server's UnbuiltMethodInterceptor), never a fake success."""

from __future__ import annotations

from zenthor.gen.zenthor.plugins.v1 import plugins_pb2_grpc


class PluginsServicer(plugins_pb2_grpc.PluginsServiceServicer):
    pass
