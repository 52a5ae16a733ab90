"""PluginsService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format, struct_pb2

from services.plugins import usecases
from services.plugins.domain import (
    Channel,
    Definition,
    DefinitionStatus,
    Diagnostic,
    DiagnosticStatus,
    Install,
    Policy,
    Scope,
)
from services.plugins.usecases import Deps
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2 as pb
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2_grpc
from zenthor.pagination import page_request
from zenthor.validate import required_text

Ctx: TypeAlias = grpc.aio.ServicerContext

_DEF_STATUS_TO_PB = {
    DefinitionStatus.ACTIVE: pb.PLUGIN_DEFINITION_STATUS_ACTIVE,
    DefinitionStatus.INACTIVE: pb.PLUGIN_DEFINITION_STATUS_INACTIVE,
}
_DEF_STATUS_FROM_PB: dict[int, DefinitionStatus] = {v: k for k, v in _DEF_STATUS_TO_PB.items()}
_DIAG_TO_PB = {
    DiagnosticStatus.ACTIVATED: pb.PLUGIN_DIAGNOSTIC_STATUS_ACTIVATED,
    DiagnosticStatus.CONFLICT: pb.PLUGIN_DIAGNOSTIC_STATUS_CONFLICT,
    DiagnosticStatus.INVALID: pb.PLUGIN_DIAGNOSTIC_STATUS_INVALID,
}
_DIAG_FROM_PB: dict[int, DiagnosticStatus] = {v: k for k, v in _DIAG_TO_PB.items()}
_CHANNEL_TO_PB = {Channel.WEB: types_pb2.CHANNEL_WEB, Channel.WHATSAPP: types_pb2.CHANNEL_WHATSAPP}
_CHANNEL_FROM_PB: dict[int, Channel] = {v: k for k, v in _CHANNEL_TO_PB.items()}


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(data, message)
    return message


def _names(names: tuple[str, ...] | None) -> pb.ToolNameList | None:
    return pb.ToolNameList(tool_names=names) if names is not None else None


def definition_pb(definition: Definition) -> pb.PluginDefinition:
    return pb.PluginDefinition(
        id=ids.PLUGIN_DEFINITION.format(definition.id),
        create_time=timestamp(definition.created_at),
        update_time=timestamp(definition.updated_at),
        name=definition.name,
        version=definition.version,
        source=definition.source,
        status=_DEF_STATUS_TO_PB[definition.status],
        manifest=_struct(definition.manifest),
        checksum=definition.checksum,
        diagnostic_status=(
            _DIAG_TO_PB[definition.diagnostic_status]
            if definition.diagnostic_status
            else pb.PLUGIN_DIAGNOSTIC_STATUS_UNSPECIFIED
        ),
        diagnostic_messages=definition.diagnostic_messages,
        last_diagnostic_time=timestamp(definition.last_diagnostic_at)
        if definition.last_diagnostic_at
        else None,
    )


def install_pb(install: Install) -> pb.PluginInstall:
    scope = install.scope
    return pb.PluginInstall(
        id=ids.PLUGIN_INSTALL.format(install.id),
        create_time=timestamp(install.created_at),
        update_time=timestamp(install.updated_at),
        workspace_scope=scope.workspace_scope,
        agent_id=ids.AGENT.format(scope.agent_id) if scope.agent_id else None,
        channel=_CHANNEL_TO_PB[scope.channel] if scope.channel else types_pb2.CHANNEL_UNSPECIFIED,
        plugin_name=install.plugin_name,
        enabled=install.enabled,
        config=_struct(install.config) if install.config is not None else None,
    )


def policy_pb(policy: Policy) -> pb.PluginPolicy:
    scope = policy.scope
    return pb.PluginPolicy(
        id=ids.PLUGIN_POLICY.format(policy.id),
        create_time=timestamp(policy.created_at),
        update_time=timestamp(policy.updated_at),
        workspace_scope=scope.workspace_scope,
        agent_id=ids.AGENT.format(scope.agent_id) if scope.agent_id else None,
        channel=_CHANNEL_TO_PB[scope.channel] if scope.channel else types_pb2.CHANNEL_UNSPECIFIED,
        allow=_names(policy.allow),
        deny=_names(policy.deny),
    )


def diagnostic_pb(item: Diagnostic | str) -> pb.PluginDiagnostic:
    if isinstance(item, str):  # a definition with no diagnostics posted yet
        return pb.PluginDiagnostic(name=item, definition_exists=True)
    return pb.PluginDiagnostic(
        name=item.name,
        status=_DIAG_TO_PB[item.status],
        messages=item.messages,
        last_diagnostic_time=timestamp(item.last_diagnostic_at),
        definition_exists=item.definition_exists,
    )


def _scope(request: Any) -> Scope:
    channel = request.channel
    if channel != types_pb2.CHANNEL_UNSPECIFIED and channel not in _CHANNEL_FROM_PB:
        raise InvalidArgument(
            "channel", "must be CHANNEL_UNSPECIFIED, CHANNEL_WEB or CHANNEL_WHATSAPP"
        )
    return Scope(
        workspace_scope=required_text(request.workspace_scope, "workspace_scope"),
        agent_id=ids.AGENT.parse_optional(
            request.agent_id if request.HasField("agent_id") else None, "agent_id"
        ),
        channel=_CHANNEL_FROM_PB.get(channel),
    )


def _tool_names(request: Any, field: str) -> tuple[str, ...] | None:
    if not request.HasField(field):
        return None
    names = tuple(getattr(request, field).tool_names)
    for n, name in enumerate(names):
        if not name.strip():
            raise InvalidArgument(f"{field}.tool_names[{n}]", "must not be empty")
    return names


class PluginsServicer(plugins_pb2_grpc.PluginsServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def ListPluginDefinitions(
        self, request: pb.ListPluginDefinitionsRequest, context: Ctx
    ) -> pb.ListPluginDefinitionsResponse:
        page = await usecases.list_definitions(
            self._deps, page_request(request.page_size, request.page_token)
        )
        return pb.ListPluginDefinitionsResponse(
            definitions=[definition_pb(x) for x in page.items], next_page_token=page.next_page_token
        )

    async def ListPluginInstalls(
        self, request: pb.ListPluginInstallsRequest, context: Ctx
    ) -> pb.ListPluginInstallsResponse:
        page = await usecases.list_installs(
            self._deps, page_request(request.page_size, request.page_token)
        )
        return pb.ListPluginInstallsResponse(
            installs=[install_pb(x) for x in page.items], next_page_token=page.next_page_token
        )

    async def ListPluginPolicies(
        self, request: pb.ListPluginPoliciesRequest, context: Ctx
    ) -> pb.ListPluginPoliciesResponse:
        page = await usecases.list_policies(
            self._deps, page_request(request.page_size, request.page_token)
        )
        return pb.ListPluginPoliciesResponse(
            policies=[policy_pb(x) for x in page.items], next_page_token=page.next_page_token
        )

    async def UpsertPluginDefinition(
        self, request: pb.UpsertPluginDefinitionRequest, context: Ctx
    ) -> pb.UpsertPluginDefinitionResponse:
        if request.status not in _DEF_STATUS_FROM_PB:
            raise InvalidArgument("status", "must be ACTIVE or INACTIVE")
        if not request.HasField("manifest"):
            raise InvalidArgument("manifest", "is required")
        definition, created = await usecases.upsert_definition(
            self._deps,
            name=required_text(request.name, "name"),
            version=required_text(request.version, "version"),
            source=required_text(request.source, "source"),
            status=_DEF_STATUS_FROM_PB[request.status],
            manifest=json_format.MessageToDict(request.manifest),
            checksum=request.checksum if request.HasField("checksum") else None,
        )
        return pb.UpsertPluginDefinitionResponse(
            definition=definition_pb(definition), created=created
        )

    async def UpsertPluginInstall(
        self, request: pb.UpsertPluginInstallRequest, context: Ctx
    ) -> pb.UpsertPluginInstallResponse:
        install, created = await usecases.upsert_install(
            self._deps,
            scope=_scope(request),
            plugin_name=required_text(request.plugin_name, "plugin_name"),
            enabled=request.enabled,
            config=json_format.MessageToDict(request.config)
            if request.HasField("config")
            else None,
        )
        return pb.UpsertPluginInstallResponse(install=install_pb(install), created=created)

    async def UpsertPluginPolicy(
        self, request: pb.UpsertPluginPolicyRequest, context: Ctx
    ) -> pb.UpsertPluginPolicyResponse:
        policy, created = await usecases.upsert_policy(
            self._deps,
            scope=_scope(request),
            allow=_tool_names(request, "allow"),
            deny=_tool_names(request, "deny"),
        )
        return pb.UpsertPluginPolicyResponse(policy=policy_pb(policy), created=created)

    async def UpsertPluginDiagnostics(
        self, request: pb.UpsertPluginDiagnosticsRequest, context: Ctx
    ) -> pb.UpsertPluginDiagnosticsResponse:
        if request.status not in _DIAG_FROM_PB:
            raise InvalidArgument("status", "must be ACTIVATED, CONFLICT or INVALID")
        diagnostic = await usecases.upsert_diagnostics(
            self._deps,
            name=required_text(request.name, "name"),
            status=_DIAG_FROM_PB[request.status],
            messages=tuple(request.messages),
        )
        return pb.UpsertPluginDiagnosticsResponse(diagnostic=diagnostic_pb(diagnostic))

    async def GetEffectiveInstallSet(
        self, request: pb.GetEffectiveInstallSetRequest, context: Ctx
    ) -> pb.GetEffectiveInstallSetResponse:
        installs = await usecases.effective_install_set(self._deps, _scope(request))
        return pb.GetEffectiveInstallSetResponse(installs=[install_pb(x) for x in installs])

    async def GetEffectivePolicy(
        self, request: pb.GetEffectivePolicyRequest, context: Ctx
    ) -> pb.GetEffectivePolicyResponse:
        policy = await usecases.effective_policy(self._deps, _scope(request))
        return pb.GetEffectivePolicyResponse(allow=_names(policy.allow), deny=_names(policy.deny))

    async def ListPluginDiagnostics(
        self, request: pb.ListPluginDiagnosticsRequest, context: Ctx
    ) -> pb.ListPluginDiagnosticsResponse:
        size = page_request(request.page_size, "").size
        page = await usecases.list_diagnostics(self._deps, size, request.page_token)
        return pb.ListPluginDiagnosticsResponse(
            diagnostics=[diagnostic_pb(x) for x in page.items], next_page_token=page.next_page_token
        )
