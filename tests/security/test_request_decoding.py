"""Requests that cannot be decoded, or carry what Postgres and JSON cannot hold, are answered
INVALID_ARGUMENT with the request id — after the caller is authenticated — by the kit's chain
for every RPC (zenthor/interceptors.py, zenthor/request_checks.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from tests.support.grpc_client import service
from zenthor.clients import rpc_status_of, violated_fields
from zenthor.config import ServiceName
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.interceptors import REQUEST_ID_HEADER
from zenthor.process import peer_resolver
from zenthor.server import Ctx, GrpcServer, ServiceRegistration

METHOD = "/zenthor.approvals.v1.ApprovalsService/CreateApproval"


class RecordingApprovals(approvals_pb2_grpc.ApprovalsServiceServicer):
    """Builds only CreateApproval and records what reached it: the kit's chain is under test,
    not the approvals service (whose own tests cover its rules)."""

    def __init__(self) -> None:
        self.received: list[pb.CreateApprovalRequest] = []

    async def CreateApproval(self, request: pb.CreateApprovalRequest, context: Ctx) -> pb.CreateApprovalResponse:
        self.received.append(request)
        return pb.CreateApprovalResponse()


@pytest.fixture
async def server(settings_for: Any) -> AsyncIterator[tuple[grpc.aio.Channel, RecordingApprovals]]:
    settings = settings_for(ServiceName.APPROVALS)
    resolver, peers = peer_resolver(settings)
    servicer = RecordingApprovals()
    registration = ServiceRegistration(
        descriptor=pb.DESCRIPTOR.services_by_name["ApprovalsService"],
        base=approvals_pb2_grpc.ApprovalsServiceServicer,
        servicer=servicer,
        add_to_server=approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server,
    )
    grpc_server = GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
    port = await grpc_server.start(0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, servicer
    await channel.close()
    await grpc_server.stop(0)


def raw_call(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """CreateApproval sending bytes as they are, as a hostile client would."""
    return channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def nested_struct(depth: int) -> struct_pb2.Value:
    value = struct_pb2.Value(string_value="leaf")
    for _ in range(depth):
        outer = struct_pb2.Value()
        outer.struct_value.fields["k"].CopyFrom(value)
        value = outer
    return value


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def nested_struct_bytes(depth: int) -> bytes:
    """CreateApprovalRequest{tool_input: {"k": {"k": … "leaf"}}} `depth` Structs deep, written
    by hand: the library itself refuses to build a message this deep."""
    value = _length_delimited(3, b"leaf")  # Value.string_value
    for _ in range(depth):
        entry = _length_delimited(1, b"k") + _length_delimited(2, value)  # map entry key, value
        value = _length_delimited(5, _length_delimited(1, entry))  # Value.struct_value{fields}
    return _length_delimited(4, value)  # CreateApprovalRequest.tool_input


def invalid_utf8_tool_name() -> bytes:
    # Field 3 (tool_name), wire type 2, length 2, then bytes that are not UTF-8.
    return bytes([3 << 3 | 2, 2, 0xFF, 0xFE])


async def test_undecodable_request_is_invalid_argument_with_the_request_id(server: Any) -> None:
    channel, servicer = server
    error = await failure(raw_call(channel)(invalid_utf8_tool_name(), metadata=(*service(), (REQUEST_ID_HEADER, "req-utf8")), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["request"]
    assert "DecodeError" not in (error.details() or "") and "Unexpected" not in (error.details() or "")
    status = rpc_status_of(error)
    assert status is not None and "req-utf8" in str(status.details)
    assert servicer.received == []


async def test_undecodable_request_from_an_unauthenticated_caller_is_unauthenticated(server: Any) -> None:
    channel, servicer = server
    error = await failure(raw_call(channel)(invalid_utf8_tool_name(), timeout=10))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.received == []


async def test_a_struct_nested_past_the_decoder_limit_is_invalid_argument(server: Any) -> None:
    channel, servicer = server
    error = await failure(raw_call(channel)(nested_struct_bytes(60), metadata=service(), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.received == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CreateApprovalRequest(tool_name="a\x00b"), "tool_name"),
        (pb.CreateApprovalRequest(conversation_user_id="usr\x00"), "conversation_user_id"),
        (pb.CreateApprovalRequest(tool_input=struct_pb2.Value(number_value=float("nan"))), "tool_input"),
        (
            pb.CreateApprovalRequest(
                tool_input=struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=float("inf"))]))
            ),
            "tool_input.list_value.values[0]",
        ),
        (
            pb.CreateApprovalRequest(
                tool_input=struct_pb2.Value(struct_value=struct_pb2.Struct(fields={"x": struct_pb2.Value(string_value="\x00")}))
            ),
            "tool_input.struct_value.fields['x'].string_value",
        ),
    ],
    ids=["nul-string", "nul-optional", "nan", "inf-in-list", "nul-in-struct"],
)
async def test_nul_characters_and_non_finite_json_numbers_name_their_field(server: Any, request_: pb.CreateApprovalRequest, field: str) -> None:
    channel, servicer = server
    stub = approvals_pb2_grpc.ApprovalsServiceStub(channel)
    error = await failure(stub.CreateApproval(request_, metadata=service(), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]
    assert servicer.received == []


async def test_a_well_formed_request_reaches_the_servicer(server: Any) -> None:
    channel, servicer = server
    stub = approvals_pb2_grpc.ApprovalsServiceStub(channel)
    request = pb.CreateApprovalRequest(tool_name="search", tool_input=nested_struct(10))
    await stub.CreateApproval(request, metadata=service(), timeout=10)
    assert servicer.received == [request]
