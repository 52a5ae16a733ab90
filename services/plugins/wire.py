"""Proto ⇄ domain conversions for the plugins servicer: requests become domain values (ids,
enums, page tokens, Structs decoded here), domain values become responses. No rules here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

from google.protobuf import json_format, struct_pb2

from services.plugins.domain.definitions import Definition, DefinitionFields, DefinitionStatus
from services.plugins.domain.diagnostics import Diagnostic, DiagnosticFields, DiagnosticStatus
from services.plugins.domain.installs import Install, InstallFields
from services.plugins.domain.policies import EffectivePolicy, Policy, PolicyFields
from services.plugins.domain.scopes import Channel, Scope
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2 as pb
from zenthor.pagination import (
    KeyPageRequest,
    Page,
    PageLimits,
    PageRequest,
    key_page_request,
    page_request,
)

E = TypeVar("E")

# Each list RPC's page sizes, as the contract documents them: 1..500, default 100.
DEFINITIONS_PAGE = INSTALLS_PAGE = POLICIES_PAGE = DIAGNOSTICS_PAGE = PageLimits(100, 500)

DEFINITION_STATUS = {
    DefinitionStatus.ACTIVE: pb.PLUGIN_DEFINITION_STATUS_ACTIVE,
    DefinitionStatus.INACTIVE: pb.PLUGIN_DEFINITION_STATUS_INACTIVE,
}
DIAGNOSTIC_STATUS = {
    DiagnosticStatus.ACTIVATED: pb.PLUGIN_DIAGNOSTIC_STATUS_ACTIVATED,
    DiagnosticStatus.CONFLICT: pb.PLUGIN_DIAGNOSTIC_STATUS_CONFLICT,
    DiagnosticStatus.INVALID: pb.PLUGIN_DIAGNOSTIC_STATUS_INVALID,
}
CHANNEL = {Channel.WEB: types_pb2.CHANNEL_WEB, Channel.WHATSAPP: types_pb2.CHANNEL_WHATSAPP}

# The requests that name a scope layer.
ScopedRequest: TypeAlias = (
    pb.UpsertPluginInstallRequest
    | pb.UpsertPluginPolicyRequest
    | pb.GetEffectiveInstallSetRequest
    | pb.GetEffectivePolicyRequest
)


# --- requests ---


def _enum(value: int, to_pb: Mapping[E, int], field: str, allowed: str) -> E:
    """The domain value `value` stands for; INVALID_ARGUMENT naming `field` for any other
    (UNSPECIFIED included)."""
    for domain_value, proto_value in to_pb.items():
        if proto_value == value:
            return domain_value
    raise InvalidArgument(field, f"must be {allowed}")


def _json(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def id_page(
    request: pb.ListPluginInstallsRequest | pb.ListPluginPoliciesRequest, limits: PageLimits
) -> PageRequest:
    return page_request(request.page_size, request.page_token, limits)


def name_page(
    request: pb.ListPluginDefinitionsRequest | pb.ListPluginDiagnosticsRequest,
    limits: PageLimits,
) -> KeyPageRequest:
    return key_page_request(request.page_size, request.page_token, limits)


def scope(request: ScopedRequest) -> Scope:
    channel = (
        None
        if request.channel == types_pb2.CHANNEL_UNSPECIFIED
        else _enum(
            request.channel,
            CHANNEL,
            "channel",
            "CHANNEL_UNSPECIFIED, CHANNEL_WEB or CHANNEL_WHATSAPP",
        )
    )
    agent_id = request.agent_id if request.HasField("agent_id") else None
    return Scope(
        workspace_scope=request.workspace_scope,
        agent_id=ids.AGENT.parse_optional(agent_id, "agent_id"),
        channel=channel,
    )


def definition_fields(request: pb.UpsertPluginDefinitionRequest) -> DefinitionFields:
    return DefinitionFields(
        name=request.name,
        version=request.version,
        source=request.source,
        status=_enum(request.status, DEFINITION_STATUS, "status", "ACTIVE or INACTIVE"),
        manifest=_json(request.manifest) if request.HasField("manifest") else None,
        checksum=request.checksum if request.HasField("checksum") else None,
    )


def install_fields(request: pb.UpsertPluginInstallRequest) -> InstallFields:
    return InstallFields(
        scope=scope(request),
        plugin_name=request.plugin_name,
        enabled=request.enabled,
        config=_json(request.config) if request.HasField("config") else None,
    )


def policy_fields(request: pb.UpsertPluginPolicyRequest) -> PolicyFields:
    return PolicyFields(
        scope=scope(request),
        allow=tuple(request.allow.tool_names) if request.HasField("allow") else None,
        deny=tuple(request.deny.tool_names) if request.HasField("deny") else None,
    )


def diagnostic_fields(request: pb.UpsertPluginDiagnosticsRequest) -> DiagnosticFields:
    return DiagnosticFields(
        name=request.name,
        status=_enum(request.status, DIAGNOSTIC_STATUS, "status", "ACTIVATED, CONFLICT or INVALID"),
        messages=tuple(request.messages),
    )


# --- messages ---


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(data, message)
    return message


def _names(names: tuple[str, ...] | None) -> pb.ToolNameList | None:
    return pb.ToolNameList(tool_names=names) if names is not None else None


def _scope_fields(layer: Scope) -> dict[str, Any]:
    """The scope layer fields PluginInstall and PluginPolicy share."""
    return {
        "workspace_scope": layer.workspace_scope,
        "agent_id": ids.AGENT.format(layer.agent_id) if layer.agent_id else None,
        "channel": CHANNEL[layer.channel] if layer.channel else types_pb2.CHANNEL_UNSPECIFIED,
    }


def definition_pb(definition: Definition) -> pb.PluginDefinition:
    diagnostic = definition.diagnostic
    return pb.PluginDefinition(
        id=ids.PLUGIN_DEFINITION.format(definition.id),
        create_time=timestamp(definition.created_at),
        update_time=timestamp(definition.updated_at),
        name=definition.name,
        version=definition.version,
        source=definition.source,
        status=DEFINITION_STATUS[definition.status],
        manifest=_struct(definition.manifest),
        checksum=definition.checksum,
        diagnostic_status=DIAGNOSTIC_STATUS[diagnostic.status]
        if diagnostic
        else pb.PLUGIN_DIAGNOSTIC_STATUS_UNSPECIFIED,
        diagnostic_messages=diagnostic.messages if diagnostic else (),
        last_diagnostic_time=timestamp(diagnostic.last_diagnostic_at) if diagnostic else None,
    )


def install_pb(install: Install) -> pb.PluginInstall:
    return pb.PluginInstall(
        id=ids.PLUGIN_INSTALL.format(install.id),
        create_time=timestamp(install.created_at),
        update_time=timestamp(install.updated_at),
        **_scope_fields(install.scope),
        plugin_name=install.plugin_name,
        enabled=install.enabled,
        config=_struct(install.config) if install.config is not None else None,
    )


def policy_pb(policy: Policy) -> pb.PluginPolicy:
    return pb.PluginPolicy(
        id=ids.PLUGIN_POLICY.format(policy.id),
        create_time=timestamp(policy.created_at),
        update_time=timestamp(policy.updated_at),
        **_scope_fields(policy.scope),
        allow=_names(policy.allow),
        deny=_names(policy.deny),
    )


def diagnostic_pb(diagnostic: Diagnostic) -> pb.PluginDiagnostic:
    result = diagnostic.result
    return pb.PluginDiagnostic(
        name=diagnostic.name,
        status=DIAGNOSTIC_STATUS[result.status]
        if result
        else pb.PLUGIN_DIAGNOSTIC_STATUS_UNSPECIFIED,
        messages=result.messages if result else (),
        last_diagnostic_time=timestamp(result.last_diagnostic_at) if result else None,
        definition_exists=diagnostic.definition_exists,
    )


# --- responses ---


def list_definitions_response(page: Page[Definition]) -> pb.ListPluginDefinitionsResponse:
    return pb.ListPluginDefinitionsResponse(
        definitions=[definition_pb(x) for x in page.items], next_page_token=page.next_page_token
    )


def list_installs_response(page: Page[Install]) -> pb.ListPluginInstallsResponse:
    return pb.ListPluginInstallsResponse(
        installs=[install_pb(x) for x in page.items], next_page_token=page.next_page_token
    )


def list_policies_response(page: Page[Policy]) -> pb.ListPluginPoliciesResponse:
    return pb.ListPluginPoliciesResponse(
        policies=[policy_pb(x) for x in page.items], next_page_token=page.next_page_token
    )


def list_diagnostics_response(page: Page[Diagnostic]) -> pb.ListPluginDiagnosticsResponse:
    return pb.ListPluginDiagnosticsResponse(
        diagnostics=[diagnostic_pb(x) for x in page.items], next_page_token=page.next_page_token
    )


def upsert_definition_response(
    definition: Definition, created: bool
) -> pb.UpsertPluginDefinitionResponse:
    return pb.UpsertPluginDefinitionResponse(definition=definition_pb(definition), created=created)


def upsert_install_response(install: Install, created: bool) -> pb.UpsertPluginInstallResponse:
    return pb.UpsertPluginInstallResponse(install=install_pb(install), created=created)


def upsert_policy_response(policy: Policy, created: bool) -> pb.UpsertPluginPolicyResponse:
    return pb.UpsertPluginPolicyResponse(policy=policy_pb(policy), created=created)


def upsert_diagnostics_response(diagnostic: Diagnostic) -> pb.UpsertPluginDiagnosticsResponse:
    return pb.UpsertPluginDiagnosticsResponse(diagnostic=diagnostic_pb(diagnostic))


def effective_install_set_response(installs: list[Install]) -> pb.GetEffectiveInstallSetResponse:
    return pb.GetEffectiveInstallSetResponse(installs=[install_pb(x) for x in installs])


def effective_policy_response(policy: EffectivePolicy) -> pb.GetEffectivePolicyResponse:
    return pb.GetEffectivePolicyResponse(allow=_names(policy.allow), deny=_names(policy.deny))
