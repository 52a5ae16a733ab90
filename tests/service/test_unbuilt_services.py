"""Services whose issue has not landed start, serve health, and answer UNIMPLEMENTED naming
the RPC — never a fake success."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.messages.app import build_server
from tests.service.conftest import start, stop
from tests.support.grpc_client import rpc_error, service
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc


async def test_unbuilt_rpc_answers_unimplemented_naming_itself(settings_for: Any, db: Any, clerk_issuer: Any) -> None:
    settings = settings_for(ServiceName.MESSAGES)
    running = await start(await build_server(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    try:
        health = health_pb2_grpc.HealthStub(running.channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service="zenthor.messages.v1.MessagesService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        error = await rpc_error(running.stub.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(), metadata=service()))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "zenthor.messages.v1.MessagesService/CleanupInboundDedupe" in error.details()
        # Auth still comes first: no key, no information.
        anonymous = await rpc_error(running.stub.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest()))
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stop(running)
