"""The contracts' HTTP mapping: every RPC a person may call (PUBLIC, SIGNED_IN, USER, ADMIN)
declares its route with `google.api.http` (AIP-127); this module reads and checks those rules
from the descriptors, so the gateway's routes are the contracts' and nothing else.

Supported rule shapes, checked when the gateway starts (it refuses to start otherwise, as a
server does without an auth mode, docs/architecture.md §3):

- one of `get`, `post`, `patch`, `put`, `delete`; no `additional_bindings`, no `custom` verb;
- path variables are simple top-level scalar fields, `{conversation_id}`; a custom method
  keeps its verb after the last segment, `/v1/conversations/{id}:archive`;
- `body: "*"` (every field not in the path) or no body (the rest are query parameters);
  GET and DELETE take none;
- server streams are GET (served as Server-Sent Events); SERVICE methods have no route: the
  gateway holds the service key, so a route to one would open it to anyone.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor

from zenthor.auth.modes import AuthMode
from zenthor.config import ServiceName
from zenthor.gen.zenthor.common.v1 import auth_pb2

# The modes whose callers are people (or anyone): each such RPC must have a route.
ROUTED_MODES = frozenset({AuthMode.PUBLIC, AuthMode.SIGNED_IN, AuthMode.USER, AuthMode.ADMIN})
_VARIABLE = re.compile(r"\{([^}]*)\}")
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")
_VERB = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Streams resume where the client left: the request's `resume_position` is filled from the
# SSE `Last-Event-ID`, and every event's id is the response's `position`.
RESUME_FIELD = "resume_position"
POSITION_FIELD = "position"


class HttpVerb(StrEnum):
    GET = "GET"
    POST = "POST"
    PATCH = "PATCH"
    PUT = "PUT"
    DELETE = "DELETE"


class MissingHttpRule(RuntimeError):
    """A method people may call declares no route; the gateway must not start."""


class InvalidHttpRule(RuntimeError):
    """A route the gateway cannot serve as declared (see the module docstring)."""


@dataclass(frozen=True)
class HttpBinding:
    """One RPC's route."""

    service: ServiceName
    method: MethodDescriptor
    mode: AuthMode
    verb: HttpVerb
    # As declared, `/v1/conversations/{conversation_id}:watch`.
    template: str
    path_fields: tuple[str, ...]
    # "*": every field not in the path is in the JSON body; "": none, they are query parameters.
    body: str

    @property
    def rpc_name(self) -> str:
        """`MessagesService.SendMessage`"""
        return f"{self.method.containing_service.name}.{self.method.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def public(self) -> bool:
        return self.mode is AuthMode.PUBLIC

    @property
    def query_fields(self) -> tuple[FieldDescriptor, ...]:
        if self.body == "*":
            return ()
        return tuple(f for f in self.method.input_type.fields if f.name not in self.path_fields)

    @property
    def body_fields(self) -> tuple[FieldDescriptor, ...]:
        if self.body != "*":
            return ()
        return tuple(f for f in self.method.input_type.fields if f.name not in self.path_fields)

    @property
    def resumable(self) -> bool:
        """A stream whose events carry a position the client can resume from."""
        return (
            self.streaming
            and RESUME_FIELD in self.method.input_type.fields_by_name
            and POSITION_FIELD in self.method.output_type.fields_by_name
        )


def contract_services() -> list[tuple[ServiceName, ServiceDescriptor]]:
    """The seven services' descriptors, from the generated modules."""
    found: list[tuple[ServiceName, ServiceDescriptor]] = []
    for service in ServiceName:
        pb2 = importlib.import_module(f"zenthor.gen.zenthor.{service.value}.v1.{service.value}_pb2")
        found.append((service, pb2.DESCRIPTOR.services_by_name[service.proto_service]))
    return found


def http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def _binding(service: ServiceName, method: MethodDescriptor, mode: AuthMode, rule: http_pb2.HttpRule) -> HttpBinding:
    name = f"{method.containing_service.full_name}/{method.name}"

    def invalid(why: str) -> InvalidHttpRule:
        return InvalidHttpRule(f"{name}: {why}")

    pattern = rule.WhichOneof("pattern")
    if pattern is None or pattern == "custom":
        raise invalid("the rule needs one of get, post, patch, put, delete")
    if rule.additional_bindings or rule.response_body:
        raise invalid("additional_bindings and response_body are not supported")
    verb = HttpVerb(pattern.upper())
    template: str = getattr(rule, pattern)
    path_fields = _check_template(template, method, invalid)
    body = rule.body
    if body not in ("", "*"):
        raise invalid(f'body must be "*" or absent, not {body!r}')
    if body and verb in (HttpVerb.GET, HttpVerb.DELETE):
        raise invalid(f"{verb} takes no body")
    if method.client_streaming:
        raise invalid("client streams have no HTTP form")
    if method.server_streaming and verb is not HttpVerb.GET:
        raise invalid("a server stream is served as SSE, which is GET")
    return HttpBinding(service, method, mode, verb, template, path_fields, body)


def _check_template(
    template: str, method: MethodDescriptor, invalid: Callable[[str], InvalidHttpRule]
) -> tuple[str, ...]:
    """The path's field names, in order."""
    if not template.startswith("/v1/"):
        raise invalid(f"path {template!r} must start with /v1/")
    # A custom verb follows a colon in the last segment only.
    path, verb = template[1:], ""
    if ":" in template.rsplit("/", 1)[-1]:
        path, _, verb = path.rpartition(":")
    if verb and not _VERB.fullmatch(verb):
        raise invalid(f"custom verb {verb!r} must be a word")
    fields: list[str] = []
    for segment in path.split("/"):
        variable = _VARIABLE.fullmatch(segment)
        if variable is None:
            if not _LITERAL_SEGMENT.fullmatch(segment):
                raise invalid(f"path segment {segment!r} is neither a literal nor a {{field}}")
            continue
        field_name = variable.group(1)
        if not _FIELD_NAME.fullmatch(field_name):
            raise invalid(f"path variable {{{field_name}}}: only a plain field name is supported")
        field = method.input_type.fields_by_name.get(field_name)
        if field is None:
            raise invalid(f"path variable {{{field_name}}} is not a field of {method.input_type.name}")
        if field.message_type is not None or field.is_repeated:
            raise invalid(f"path variable {{{field_name}}} must be a singular scalar field")
        if field_name in fields:
            raise invalid(f"path variable {{{field_name}}} appears twice")
        fields.append(field_name)
    return tuple(fields)


def http_bindings(services: Iterable[tuple[ServiceName, ServiceDescriptor]]) -> list[HttpBinding]:
    """Every routed method's binding, literal paths before variable ones (so `/v1/users/me`
    is never taken for a variable); raises MissingHttpRule listing every method people may
    call that declares no route, InvalidHttpRule for the first rule the gateway cannot serve."""
    bindings: list[HttpBinding] = []
    missing: list[str] = []
    for service, descriptor in services:
        for method in descriptor.methods:
            mode = AuthMode(method.GetOptions().Extensions[auth_pb2.auth_mode])
            rule = http_rule(method)
            name = f"{descriptor.full_name}/{method.name}"
            if mode not in ROUTED_MODES:
                if rule is not None:
                    raise InvalidHttpRule(f"{name}: a {mode.name} method must have no HTTP route")
                continue
            if rule is None:
                missing.append(name)
                continue
            bindings.append(_binding(service, method, mode, rule))
    if missing:
        raise MissingHttpRule(
            "refusing to start: these methods declare no (google.api.http) route: " + ", ".join(sorted(missing))
        )
    _refuse_duplicates(bindings)
    return sorted(bindings, key=_route_order)


def _refuse_duplicates(bindings: Sequence[HttpBinding]) -> None:
    seen: dict[tuple[HttpVerb, str], str] = {}
    for binding in bindings:
        key = (binding.verb, _VARIABLE.sub("{}", binding.template))
        if key in seen:
            raise InvalidHttpRule(f"{binding.rpc_name} and {seen[key]} both declare {binding.verb} {binding.template}")
        seen[key] = binding.rpc_name


def _route_order(binding: HttpBinding) -> tuple[str, str]:
    # "~" sorts after every literal character: at each position a literal comes first.
    return (_VARIABLE.sub("~", binding.template), binding.verb.value)
