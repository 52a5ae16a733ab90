"""An RPC whose servicer does not implement it answers UNIMPLEMENTED naming itself — never a fake
success; todoist, the last service to land, implements its whole contract."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.todoist.app import build_server as build_todoist_server
from services.todoist.servicer import TodoistServicer
from tests.service.conftest import start, stop
from tests.support.grpc_client import rpc_error, service
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2, todoist_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


def unbuilt_messages_server(settings: Any) -> GrpcServer:
    """A server whose servicer overrides nothing: every RPC is unbuilt (whatever has landed)."""
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=pb.DESCRIPTOR.services_by_name["MessagesService"],
        base=messages_pb2_grpc.MessagesServiceServicer,
        servicer=messages_pb2_grpc.MessagesServiceServicer(),
        add_to_server=messages_pb2_grpc.add_MessagesServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])


async def test_unbuilt_rpc_answers_unimplemented_naming_itself(settings_for: Any, db: Any, clerk_issuer: Any) -> None:
    settings = settings_for(ServiceName.MESSAGES)
    running = await start(unbuilt_messages_server(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
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


async def test_todoist_is_built_serves_health_and_implements_its_whole_contract(
    settings_for: Any, db: Any, clerk_issuer: Any
) -> None:
    descriptor = todoist_pb2.DESCRIPTOR.services_by_name["TodoistService"]
    assert {m.name for m in descriptor.methods} <= set(vars(TodoistServicer))
    settings = settings_for(ServiceName.TODOIST)
    running = await start(await build_todoist_server(settings), todoist_pb2_grpc.TodoistServiceStub, settings, db, clerk_issuer)
    try:
        health = health_pb2_grpc.HealthStub(running.channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service="zenthor.todoist.v1.TodoistService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        request = todoist_pb2.CleanupExpiredTodoistOAuthStatesRequest()
        reply = await running.stub.CleanupExpiredTodoistOAuthStates(request, metadata=service())
        assert (reply.deleted, reply.more) == (0, False)
    finally:
        await stop(running)
