"""PluginsService over gRPC: each RPC decodes its request with `wire`, makes one use case call
and answers what `wire` builds. No rules, no SQL here."""

from __future__ import annotations

from services.plugins import wire
from services.plugins.usecases import definitions, diagnostics, installs, policies
from services.plugins.usecases.deps import Deps
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2 as pb
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2_grpc
from zenthor.server import Ctx


class PluginsServicer(plugins_pb2_grpc.PluginsServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- admin views ---

    async def ListPluginDefinitions(
        self, request: pb.ListPluginDefinitionsRequest, context: Ctx
    ) -> pb.ListPluginDefinitionsResponse:
        page = await definitions.list_definitions(
            self._deps, wire.name_page(request, wire.DEFINITIONS_PAGE)
        )
        return wire.list_definitions_response(page)

    async def ListPluginInstalls(
        self, request: pb.ListPluginInstallsRequest, context: Ctx
    ) -> pb.ListPluginInstallsResponse:
        page = await installs.list_installs(self._deps, wire.id_page(request, wire.INSTALLS_PAGE))
        return wire.list_installs_response(page)

    async def ListPluginPolicies(
        self, request: pb.ListPluginPoliciesRequest, context: Ctx
    ) -> pb.ListPluginPoliciesResponse:
        page = await policies.list_policies(self._deps, wire.id_page(request, wire.POLICIES_PAGE))
        return wire.list_policies_response(page)

    # --- writes ---

    async def UpsertPluginDefinition(
        self, request: pb.UpsertPluginDefinitionRequest, context: Ctx
    ) -> pb.UpsertPluginDefinitionResponse:
        definition, created = await definitions.upsert_definition(
            self._deps, wire.definition_fields(request)
        )
        return wire.upsert_definition_response(definition, created)

    async def UpsertPluginInstall(
        self, request: pb.UpsertPluginInstallRequest, context: Ctx
    ) -> pb.UpsertPluginInstallResponse:
        install, created = await installs.upsert_install(self._deps, wire.install_fields(request))
        return wire.upsert_install_response(install, created)

    async def UpsertPluginPolicy(
        self, request: pb.UpsertPluginPolicyRequest, context: Ctx
    ) -> pb.UpsertPluginPolicyResponse:
        policy, created = await policies.upsert_policy(self._deps, wire.policy_fields(request))
        return wire.upsert_policy_response(policy, created)

    async def UpsertPluginDiagnostics(
        self, request: pb.UpsertPluginDiagnosticsRequest, context: Ctx
    ) -> pb.UpsertPluginDiagnosticsResponse:
        diagnostic = await diagnostics.upsert_diagnostics(
            self._deps, wire.diagnostic_fields(request)
        )
        return wire.upsert_diagnostics_response(diagnostic)

    # --- runtime reads ---

    async def GetEffectiveInstallSet(
        self, request: pb.GetEffectiveInstallSetRequest, context: Ctx
    ) -> pb.GetEffectiveInstallSetResponse:
        found = await installs.get_effective_install_set(self._deps, wire.scope(request))
        return wire.effective_install_set_response(found)

    async def GetEffectivePolicy(
        self, request: pb.GetEffectivePolicyRequest, context: Ctx
    ) -> pb.GetEffectivePolicyResponse:
        policy = await policies.get_effective_policy(self._deps, wire.scope(request))
        return wire.effective_policy_response(policy)

    async def ListPluginDiagnostics(
        self, request: pb.ListPluginDiagnosticsRequest, context: Ctx
    ) -> pb.ListPluginDiagnosticsResponse:
        page = await diagnostics.list_diagnostics(
            self._deps, wire.name_page(request, wire.DIAGNOSTICS_PAGE)
        )
        return wire.list_diagnostics_response(page)
