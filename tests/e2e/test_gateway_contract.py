"""The gateway's routes are the contracts' HTTP mapping: every RPC people may call has a route
and an OpenAPI operation, every server stream an SSE route, and a new RPC without a route (or
with one the gateway cannot serve) keeps the gateway from starting."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from sse_starlette import EventSourceResponse

from gateway.app import create_app
from gateway.http_rules import (
    ROUTED_MODES,
    InvalidHttpRule,
    MissingHttpRule,
    contract_services,
    http_bindings,
    http_rule,
)
from gateway.openapi import ERROR_STATUSES
from gateway.rest import SseConfig, contract_router
from zenthor.auth.modes import AuthMode
from zenthor.config import ServiceName, Settings
from zenthor.gen.zenthor.common.v1 import auth_pb2


@pytest.fixture(scope="module")
def openapi_and_routes() -> tuple[dict[str, Any], dict[str, APIRoute]]:
    app = create_app(Settings.model_validate({"log_format": "console"}))
    # The router create_app includes (FastAPI keeps included routes behind a private wrapper).
    router, _ = contract_router(http_bindings(contract_services()), SseConfig())
    routes = {r.name: r for r in router.routes if isinstance(r, APIRoute)}
    return app.openapi(), routes


def test_every_rpc_people_may_call_has_a_route_and_an_openapi_operation(
    openapi_and_routes: tuple[dict[str, Any], dict[str, APIRoute]],
) -> None:
    document, routes = openapi_and_routes
    routed = 0
    for _service, descriptor in contract_services():
        for method in descriptor.methods:
            name = f"{descriptor.name}.{method.name}"
            mode = AuthMode(method.GetOptions().Extensions[auth_pb2.auth_mode])
            rule = http_rule(method)
            if mode not in ROUTED_MODES:
                assert rule is None, f"{name} is {mode.name}: it must have no HTTP route"
                assert name not in routes
                continue
            assert rule is not None, f"{name} ({mode.name}) declares no (google.api.http) route"
            verb = rule.WhichOneof("pattern")
            assert verb is not None
            template = getattr(rule, verb)
            route = routes[name]
            assert (route.methods, route.path_format) == ({verb.upper()}, template), name
            operation = document["paths"][template][verb]
            assert operation["operationId"] == name
            errors = {str(status) for status in ERROR_STATUSES}
            if mode is AuthMode.PUBLIC:
                assert operation["security"] == [], f"{name} is public: its operation says so"
                errors -= {"401", "403"}
            else:
                assert operation["security"] == [{"HTTPBearer": []}], name
            assert errors <= set(operation["responses"]), name
            for status in errors:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            ok = operation["responses"]["200"]["content"]
            if method.server_streaming:
                assert route.response_class is EventSourceResponse, name
                assert set(ok) == {"text/event-stream"}, name
            else:
                assert set(ok) == {"application/json"}, name
            path_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert path_names == re.findall(r"\{(\w+)\}", template), name
            routed += 1
    # Identity, messages, agent_queue, approvals, plugins and todoist front people today.
    assert routed >= 50


def test_openapi_schemas_describe_every_referenced_message(
    openapi_and_routes: tuple[dict[str, Any], dict[str, APIRoute]],
) -> None:
    document, _ = openapi_and_routes
    schemas = document["components"]["schemas"]
    text = str(document["paths"]) + str(schemas)
    for reference in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert reference in schemas, reference
    message = schemas["zenthor.messages.v1.Message"]["properties"]
    assert message["create_time"] == {"type": "string", "format": "date-time"}
    assert message["role"]["enum"][0] == "MESSAGE_ROLE_UNSPECIFIED"


def test_readiness_checks_every_service_the_routes_front() -> None:
    from gateway.health import READINESS_PEERS

    fronted = {b.service for b in http_bindings(contract_services())}
    assert fronted <= set(READINESS_PEERS) == set(ServiceName)


# --- a contract the gateway must refuse ---


def _service(*methods: tuple[str, int, str | None, str]) -> ServiceDescriptor:
    """A one-file contract `newcomer.v1.NewcomerService` with methods (name, auth mode,
    `verb path` or None, body)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, http_pb2, annotations_pb2, auth_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        pool.Add(file)
    proto = descriptor_pb2.FileDescriptorProto(
        name="newcomer.proto", package="newcomer.v1", syntax="proto3",
        dependency=["zenthor/common/v1/auth.proto", "google/api/annotations.proto"],
    )
    request = proto.message_type.add(name="PingRequest")
    request.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    proto.message_type.add(name="PingResponse")
    service = proto.service.add(name="NewcomerService")
    for name, mode, route, body in methods:
        method = service.method.add(name=name, input_type=".newcomer.v1.PingRequest", output_type=".newcomer.v1.PingResponse")
        method.options.Extensions[auth_pb2.auth_mode] = mode
        if route is not None:
            verb, path = route.split(" ")
            rule = method.options.Extensions[annotations_pb2.http]
            setattr(rule, verb, path)
            rule.body = body
    pool.Add(proto)
    return pool.FindServiceByName("newcomer.v1.NewcomerService")


def test_a_new_rpc_people_may_call_without_a_route_keeps_the_gateway_from_starting() -> None:
    routed = _service(("GetPing", auth_pb2.AUTH_MODE_USER, "get /v1/pings/{id}", ""))
    [binding] = http_bindings([(ServiceName.IDENTITY, routed)])
    assert (binding.template, binding.path_fields) == ("/v1/pings/{id}", ("id",))
    for mode in (auth_pb2.AUTH_MODE_USER, auth_pb2.AUTH_MODE_ADMIN, auth_pb2.AUTH_MODE_SIGNED_IN, auth_pb2.AUTH_MODE_PUBLIC):
        forgotten = _service(("GetPing", auth_pb2.AUTH_MODE_USER, "get /v1/pings/{id}", ""), ("Ping", mode, None, ""))
        with pytest.raises(MissingHttpRule, match=r"newcomer\.v1\.NewcomerService/Ping\b"):
            http_bindings([(ServiceName.IDENTITY, forgotten)])


@pytest.mark.parametrize(
    ("method", "why"),
    [
        # The gateway calls with the service key too: a route would open a SERVICE method to anyone.
        (("Ping", auth_pb2.AUTH_MODE_SERVICE, "post /v1/pings", "*"), "SERVICE method must have no HTTP route"),
        (("Ping", auth_pb2.AUTH_MODE_USER, "get /v1/pings", "*"), "GET takes no body"),
        (("Ping", auth_pb2.AUTH_MODE_USER, "get /v1/pings/{name}", ""), "not a field of PingRequest"),
        (("Ping", auth_pb2.AUTH_MODE_USER, "get /v1/pings/{id=*}", ""), "only a plain field name"),
        (("Ping", auth_pb2.AUTH_MODE_USER, "get /pings", ""), "must start with /v1/"),
        (("Ping", auth_pb2.AUTH_MODE_USER, "post /v1/pings", "id"), 'body must be "\\*" or absent'),
    ],
)
def test_a_route_the_gateway_cannot_serve_keeps_it_from_starting(method: tuple[str, int, str, str], why: str) -> None:
    with pytest.raises(InvalidHttpRule, match=why):
        http_bindings([(ServiceName.IDENTITY, _service(method))])


def test_two_rpcs_on_one_route_keep_the_gateway_from_starting() -> None:
    twins = _service(("GetPing", auth_pb2.AUTH_MODE_USER, "get /v1/pings/{id}", ""),
                     ("ReadPing", auth_pb2.AUTH_MODE_USER, "get /v1/pings/{id}", ""))
    with pytest.raises(InvalidHttpRule, match=re.escape("both declare GET /v1/pings/{id}")):
        http_bindings([(ServiceName.IDENTITY, twins)])
