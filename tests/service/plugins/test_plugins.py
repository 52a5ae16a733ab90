"""The plugin registry and policy store over gRPC: definitions, installs, policies, diagnostics
and the effective install set and policy, with unique keys where an absent agent or channel is
one value (docs/hardening.md #24) and manifests validated against one JSON Schema
(docs/hardening.md #25)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from tests.service.conftest import Running
from tests.support.builders import alice, boss
from tests.support.fake_clock import T0, FakeClock
from tests.support.grpc_client import bearer, rpc_error, service
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2 as pb

WEB, WHATSAPP = types_pb2.CHANNEL_WEB, types_pb2.CHANNEL_WHATSAPP
ACTIVE = pb.PLUGIN_DEFINITION_STATUS_ACTIVE


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(data, message)
    return message


def manifest(
    plugin_id: str = "core-time", tools: list[str] | None = None, **extra: Any
) -> struct_pb2.Struct:
    tools = ["get_current_time"] if tools is None else tools
    return struct(
        {
            "id": plugin_id,
            "version": "1.0.0",
            "tools": tools,
            "riskLevel": "low",
            "source": "builtin",
            **extra,
        }
    )


def admin(plugins: Running) -> tuple[tuple[str, str], ...]:
    boss(plugins.db)
    return bearer(plugins.issuer.token("user_boss"))


async def define(
    plugins: Running, name: str = "core-time", version: str = "1.0.0", **kw: Any
) -> Any:
    request = pb.UpsertPluginDefinitionRequest(
        name=name,
        version=version,
        source="builtin",
        status=kw.pop("status", ACTIVE),
        manifest=kw.pop("manifest", manifest(name)),
        **kw,
    )
    return await plugins.stub.UpsertPluginDefinition(request, metadata=service())


async def install(
    plugins: Running,
    meta: Any,
    name: str,
    enabled: bool,
    *,
    agent: uuid.UUID | None = None,
    channel: Any = 0,
) -> Any:
    return await plugins.stub.UpsertPluginInstall(
        pb.UpsertPluginInstallRequest(
            workspace_scope="default",
            agent_id=ids.AGENT.format(agent) if agent else None,
            channel=channel,
            plugin_name=name,
            enabled=enabled,
        ),
        metadata=meta,
    )


def names(values: list[str] | None) -> pb.ToolNameList | None:
    return pb.ToolNameList(tool_names=values) if values is not None else None


async def policy(
    plugins: Running,
    meta: Any,
    *,
    agent: uuid.UUID | None = None,
    channel: Any = 0,
    allow: list[str] | None = None,
    deny: list[str] | None = None,
) -> Any:
    return await plugins.stub.UpsertPluginPolicy(
        pb.UpsertPluginPolicyRequest(
            workspace_scope="default",
            agent_id=ids.AGENT.format(agent) if agent else None,
            channel=channel,
            allow=names(allow),
            deny=names(deny),
        ),
        metadata=meta,
    )


async def effective_policy(
    plugins: Running, agent: uuid.UUID, channel: Any
) -> dict[str, list[str]]:
    reply = await plugins.stub.GetEffectivePolicy(
        pb.GetEffectivePolicyRequest(
            workspace_scope="default", agent_id=ids.AGENT.format(agent), channel=channel
        ),
        metadata=service(),
    )
    result = {}
    if reply.HasField("allow"):
        result["allow"] = list(reply.allow.tool_names)
    if reply.HasField("deny"):
        result["deny"] = list(reply.deny.tool_names)
    return result


def count(plugins: Running, table: str) -> int:
    return int(plugins.db.sql(f"SELECT count(*) FROM plugins.{table}")[0][0])


async def test_definition_upsert_keeps_one_row_and_its_creation_time(
    plugins: Running, clock: FakeClock
) -> None:
    first = await define(plugins, checksum="abc")
    clock.advance(seconds=1)
    second = await define(plugins, version="1.1.0")
    assert first.created and not second.created
    assert first.definition.id == second.definition.id
    listed = await plugins.stub.ListPluginDefinitions(
        pb.ListPluginDefinitionsRequest(), metadata=admin(plugins)
    )
    [row] = listed.definitions
    assert row.version == "1.1.0" and not row.HasField("checksum")
    assert row.create_time.ToDatetime().timestamp() == T0.timestamp()
    assert row.update_time.ToDatetime().timestamp() == T0.timestamp() + 1


async def test_effective_install_set_most_specific_wins_disabled_included(plugins: Running) -> None:
    meta, a1 = admin(plugins), ids.AGENT.new()
    await install(plugins, meta, "core-todoist", True)
    await install(plugins, meta, "core-todoist", False, channel=WHATSAPP)
    await install(plugins, meta, "core-time", True, agent=a1)

    async def effective(channel: Any) -> list[tuple[str, bool, int]]:
        reply = await plugins.stub.GetEffectiveInstallSet(
            pb.GetEffectiveInstallSetRequest(
                workspace_scope="default", agent_id=ids.AGENT.format(a1), channel=channel
            ),
            metadata=service(),
        )
        return [(i.plugin_name, i.enabled, i.channel) for i in reply.installs]

    assert await effective(WHATSAPP) == [("core-todoist", False, WHATSAPP), ("core-time", True, 0)]
    assert await effective(WEB) == [("core-todoist", True, 0), ("core-time", True, 0)]


async def test_effective_policy_intersects_allow_and_unions_deny(plugins: Running) -> None:
    meta, a1 = admin(plugins), ids.AGENT.new()
    assert await effective_policy(plugins, a1, WHATSAPP) == {}
    await policy(plugins, meta, allow=["a", "b", "c"], deny=["x"])
    await policy(plugins, meta, agent=a1, allow=["c", "b", "z"])
    await policy(plugins, meta, agent=a1, channel=WHATSAPP, deny=["x", "y"])
    assert await effective_policy(plugins, a1, WHATSAPP) == {
        "allow": ["b", "c"],
        "deny": ["x", "y"],
    }
    await policy(plugins, meta, channel=WHATSAPP, allow=[])
    assert await effective_policy(plugins, a1, WHATSAPP) == {"allow": [], "deny": ["x", "y"]}


async def test_policy_upsert_clears_omitted_lists(plugins: Running) -> None:
    meta = admin(plugins)
    first = await policy(plugins, meta, allow=["a"], deny=["b"])
    second = await policy(plugins, meta, deny=["c"])
    assert first.created and not second.created and first.policy.id == second.policy.id
    [row] = (
        await plugins.stub.ListPluginPolicies(pb.ListPluginPoliciesRequest(), metadata=meta)
    ).policies
    assert not row.HasField("allow") and list(row.deny.tool_names) == ["c"]


async def test_conflict_diagnostics_are_stored_and_listed(
    plugins: Running, clock: FakeClock
) -> None:
    await define(plugins, "core-time")
    await define(plugins, "acme-time", manifest=manifest("acme-time"))
    await plugins.stub.UpsertPluginDiagnostics(
        pb.UpsertPluginDiagnosticsRequest(
            name="core-time", status=pb.PLUGIN_DIAGNOSTIC_STATUS_ACTIVATED
        ),
        metadata=service(),
    )
    clock.advance(seconds=5)
    message = 'tool "get_current_time" conflicts with plugin "core-time"'
    reply = await plugins.stub.UpsertPluginDiagnostics(
        pb.UpsertPluginDiagnosticsRequest(
            name="acme-time", status=pb.PLUGIN_DIAGNOSTIC_STATUS_CONFLICT, messages=[message]
        ),
        metadata=service(),
    )
    assert reply.diagnostic.definition_exists
    assert reply.diagnostic.last_diagnostic_time.ToDatetime().timestamp() == clock.now.timestamp()
    listed = await plugins.stub.ListPluginDiagnostics(
        pb.ListPluginDiagnosticsRequest(), metadata=service()
    )
    by_name = {d.name: d for d in listed.diagnostics}
    assert by_name["acme-time"].status == pb.PLUGIN_DIAGNOSTIC_STATUS_CONFLICT
    assert list(by_name["acme-time"].messages) == [message]
    assert by_name["core-time"].status == pb.PLUGIN_DIAGNOSTIC_STATUS_ACTIVATED
    [acme] = [
        d
        for d in (
            await plugins.stub.ListPluginDefinitions(
                pb.ListPluginDefinitionsRequest(), metadata=admin(plugins)
            )
        ).definitions
        if d.name == "acme-time"
    ]
    assert (
        acme.diagnostic_status == pb.PLUGIN_DIAGNOSTIC_STATUS_CONFLICT and acme.version == "1.0.0"
    )


async def test_diagnostics_posted_before_the_definition_are_kept(plugins: Running) -> None:
    reply = await plugins.stub.UpsertPluginDiagnostics(
        pb.UpsertPluginDiagnosticsRequest(
            name="core-memory", status=pb.PLUGIN_DIAGNOSTIC_STATUS_ACTIVATED
        ),
        metadata=service(),
    )
    assert not reply.diagnostic.definition_exists
    await define(plugins, "core-memory", manifest=manifest("core-memory", ["memory_search"]))
    [d] = (
        await plugins.stub.ListPluginDiagnostics(
            pb.ListPluginDiagnosticsRequest(), metadata=service()
        )
    ).diagnostics
    assert (
        d.name == "core-memory"
        and d.definition_exists
        and d.status == pb.PLUGIN_DIAGNOSTIC_STATUS_ACTIVATED
    )


async def test_invalid_diagnostics_keep_one_message_per_issue(plugins: Running) -> None:
    messages = ["id: must match ^[a-z0-9-]+$", "tools: must have at least 1 item"]
    reply = await plugins.stub.UpsertPluginDiagnostics(
        pb.UpsertPluginDiagnosticsRequest(
            name="Bad_Name", status=pb.PLUGIN_DIAGNOSTIC_STATUS_INVALID, messages=messages
        ),
        metadata=service(),
    )
    assert (
        reply.diagnostic.status == pb.PLUGIN_DIAGNOSTIC_STATUS_INVALID
        and list(reply.diagnostic.messages) == messages
    )


async def test_member_cannot_manage_installs(plugins: Running) -> None:
    alice(plugins.db)
    error = await rpc_error(
        install(plugins, bearer(plugins.issuer.token("user_alice")), "core-time", False)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert count(plugins, "plugin_installs") == 0


@pytest.mark.parametrize(
    ("bad_manifest", "field"),
    [
        ({"id": "Bad_Name", "version": "1.0.0", "tools": ["t"]}, "manifest.id"),
        ({"id": "ok", "version": "1.0.0", "tools": []}, "manifest.tools"),
        ({"id": "ok", "version": "1.0.0", "tools": [""]}, "manifest.tools.0"),
        ({"id": "ok", "tools": ["t"]}, "manifest.version"),
        (
            {"id": "ok", "version": "1", "tools": ["t"], "riskLevel": "critical"},
            "manifest.riskLevel",
        ),
        ({"id": "ok", "version": "1", "tools": ["t"], "channels": ["sms"]}, "manifest.channels.0"),
    ],
)
async def test_definition_with_invalid_manifest_is_rejected_naming_the_field(
    plugins: Running, bad_manifest: dict[str, Any], field: str
) -> None:
    error = await rpc_error(define(plugins, "ok", manifest=struct(bad_manifest)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]
    assert count(plugins, "plugin_definitions") == 0


async def test_bad_input_names_the_field_and_writes_nothing(plugins: Running) -> None:
    meta = admin(plugins)
    cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: define(plugins, ""), "name"),
        (
            lambda: define(plugins, "core-time", status=pb.PLUGIN_DEFINITION_STATUS_UNSPECIFIED),
            "status",
        ),
        (
            lambda: plugins.stub.UpsertPluginInstall(
                pb.UpsertPluginInstallRequest(plugin_name="x"), metadata=meta
            ),
            "workspace_scope",
        ),
        (
            lambda: plugins.stub.UpsertPluginInstall(
                pb.UpsertPluginInstallRequest(
                    workspace_scope="default", agent_id="usr_nope", plugin_name="x"
                ),
                metadata=meta,
            ),
            "agent_id",
        ),
        (
            lambda: plugins.stub.UpsertPluginPolicy(
                pb.UpsertPluginPolicyRequest(workspace_scope="default", channel=cast(Any, 99)),
                metadata=meta,
            ),
            "channel",
        ),
        (
            lambda: plugins.stub.UpsertPluginPolicy(
                pb.UpsertPluginPolicyRequest(workspace_scope="default", deny=names(["ok", " "])),
                metadata=meta,
            ),
            "deny.tool_names[1]",
        ),
        (
            lambda: plugins.stub.UpsertPluginDiagnostics(
                pb.UpsertPluginDiagnosticsRequest(name="x"), metadata=service()
            ),
            "status",
        ),
    ]
    for call, field in cases:
        error = await rpc_error(call())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert violated_fields(error) == [field]
    for table in ("plugin_definitions", "plugin_installs", "plugin_policies", "plugin_diagnostics"):
        assert count(plugins, table) == 0


async def test_concurrent_upserts_of_one_key_make_one_row(plugins: Running) -> None:
    meta = admin(plugins)
    defs = await asyncio.gather(
        *(define(plugins, "core-time", version=f"1.0.{n}") for n in range(20))
    )
    installs = await asyncio.gather(
        *(install(plugins, meta, "core-time", n % 2 == 0) for n in range(20))
    )
    policies = await asyncio.gather(
        *(policy(plugins, meta, channel=WEB, deny=[f"t{n}"]) for n in range(20))
    )
    for replies, table in (
        (defs, "plugin_definitions"),
        (installs, "plugin_installs"),
        (policies, "plugin_policies"),
    ):
        assert count(plugins, table) == 1
        assert sum(r.created for r in replies) == 1


async def test_absent_agent_and_channel_are_one_key_but_distinct_from_present(
    plugins: Running,
) -> None:
    meta, a1 = admin(plugins), ids.AGENT.new()
    await install(plugins, meta, "core-time", True)
    await install(plugins, meta, "core-time", False)
    await install(plugins, meta, "core-time", True, agent=a1)
    await install(plugins, meta, "core-time", True, channel=WEB)
    assert count(plugins, "plugin_installs") == 3


async def test_lists_page_through_all_rows(plugins: Running) -> None:
    for n in range(5):
        await define(plugins, f"p-{n}", manifest=manifest(f"p-{n}"))
    meta, seen, token = admin(plugins), [], ""
    while True:
        reply = await plugins.stub.ListPluginDefinitions(
            pb.ListPluginDefinitionsRequest(page_size=2, page_token=token), metadata=meta
        )
        seen += [d.name for d in reply.definitions]
        token = reply.next_page_token
        if not token:
            break
    assert seen == [f"p-{n}" for n in range(5)]
    seen, token = [], ""
    while True:
        diag = await plugins.stub.ListPluginDiagnostics(
            pb.ListPluginDiagnosticsRequest(page_size=2, page_token=token), metadata=service()
        )
        seen += [d.name for d in diag.diagnostics]
        token = diag.next_page_token
        if not token:
            break
    assert seen == [f"p-{n}" for n in range(5)]
