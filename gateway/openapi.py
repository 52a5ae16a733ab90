"""OpenAPI for the contract routes: JSON Schemas of the proto messages as the edge writes them
(gateway/protojson.py), the parameters of each route, and its error responses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.errors import ErrorBody
from gateway.http_rules import HttpBinding

Schema = dict[str, Any]
REF_PREFIX = "#/components/schemas/"

# protobuf's JSON mapping of the well-known types (https://protobuf.dev/programming-guides/json/).
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "description": "seconds with an `s` suffix, e.g. `3600s`"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
}
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
          FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
          FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}

ERROR_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT: a bad input; `field` names it",
    401: "UNAUTHENTICATED: no valid bearer token, or no user for it",
    403: "PERMISSION_DENIED: an inactive user, or not an admin",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION or ALREADY_EXISTS: the resource's state refuses the call",
    429: "RESOURCE_EXHAUSTED: over a rate limit; `Retry-After` says in how many seconds to retry",
    500: "INTERNAL: quote `request_id`",
    501: "UNIMPLEMENTED: the method is in the contract but not built yet",
    503: "UNAVAILABLE or DEADLINE_EXCEEDED: a service is down or slow; retry later",
}


class SchemaRegistry:
    """Collects a schema per message reached from the routes, for `components.schemas`."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def ref(self, descriptor: Descriptor) -> Schema:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.schemas:
            self.schemas[descriptor.full_name] = {}  # placeholder: recursive messages end here
            self.schemas[descriptor.full_name] = self.object_schema(descriptor)
        return {"$ref": REF_PREFIX + descriptor.full_name}

    def object_schema(self, descriptor: Descriptor, *, skip: Iterable[str] = ()) -> Schema:
        skipped = set(skip)
        properties = {f.name: self.field(f) for f in descriptor.fields if f.name not in skipped}
        return {"type": "object", "title": descriptor.name, "properties": properties}

    def field(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if field.is_repeated:
            return {"type": "array", "items": self.single(field)}
        return self.single(field)

    def single(self, field: FieldDescriptor) -> Schema:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if field.type in _INT32:
            return {"type": "integer", "format": "int32"}
        if field.type in _INT64:
            return {"type": "string", "format": "int64"}
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return {"type": "number"}
        if field.type == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if field.type == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}

    def response(self, descriptor: Descriptor) -> Schema:
        """As gateway.protojson.response_json writes it: absent top-level messages are null."""
        schema = self.object_schema(descriptor)
        for field in descriptor.fields:
            if field.message_type is not None and not field.is_repeated:
                schema["properties"][field.name] = {"anyOf": [self.field(field), {"type": "null"}]}
        return schema


def _parameter(registry: SchemaRegistry, field: FieldDescriptor, where: str) -> Schema:
    return {
        "name": field.name,
        "in": where,
        "required": where == "path",
        "schema": registry.field(field),
    }


def operation_extra(binding: HttpBinding, registry: SchemaRegistry) -> Schema:
    """What FastAPI cannot see in the generic handler's signature: parameters, the request
    body, and who may call it (public routes say so with an empty security list)."""
    request = binding.method.input_type
    parameters = [_parameter(registry, request.fields_by_name[name], "path") for name in binding.path_fields]
    parameters += [_parameter(registry, f, "query") for f in binding.query_fields]
    if binding.resumable:
        parameters.append({
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "The last event id seen: the stream resumes after it (what EventSource sends by itself).",
        })
    extra: Schema = {"parameters": parameters}
    if binding.body_fields:
        body = registry.object_schema(request, skip=binding.path_fields)
        extra["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if binding.public:
        extra["security"] = []
    return extra


def responses(binding: HttpBinding, registry: SchemaRegistry) -> dict[int | str, Any]:
    reply = binding.method.output_type
    if binding.streaming:
        position = " Each event's `id` is the response's `position`." if binding.resumable else ""
        ok: Schema = {
            "description": (
                f"Server-Sent Events: each `change` event's data is one {reply.name} as JSON "
                f"(the current state first, then after every change); comment lines keep the "
                f"connection alive; an `error` event carries an error body before the stream ends.{position}"
            ),
            "content": {"text/event-stream": {"schema": registry.response(reply)}},
        }
    else:
        ok = {"description": reply.name, "content": {"application/json": {"schema": registry.response(reply)}}}
    answers: dict[int | str, Any] = {200: ok}
    for status, description in ERROR_STATUSES.items():
        if binding.public and status in (401, 403):
            continue
        answers[status] = {"description": description, "model": ErrorBody}
    return answers
