"""Agents over gRPC (admin): the default agent and CRUD; names unique (docs/hardening.md #24)."""

from __future__ import annotations

from datetime import timedelta

import grpc

from tests.service.conftest import Running
from tests.support.agent_queue_builders import T0, ManualClock
from tests.support.builders import alice, boss
from tests.support.grpc_client import bearer, rpc_error
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb


def admin(aq: Running) -> tuple[tuple[str, str], ...]:
    return bearer(aq.issuer.token("user_boss"))


async def create(aq: Running, name: str, enabled: bool = True, **extra: object) -> pb.Agent:
    request = pb.CreateAgentRequest(name=name, description="d", system_prompt="s", enabled=enabled, **extra)  # type: ignore[arg-type]
    return (await aq.stub.CreateAgent(request, metadata=admin(aq))).agent


async def test_default_agent_is_the_oldest_enabled_one(agent_queue: Running, clock: ManualClock) -> None:
    boss(agent_queue.db)
    clock.set(T0 - timedelta(milliseconds=1))
    await create(agent_queue, "A3", enabled=False)
    clock.set(T0)
    a1 = await create(agent_queue, "A1")
    clock.set(T0 + timedelta(milliseconds=1))
    await create(agent_queue, "A2")
    reply = await agent_queue.stub.GetDefaultAgent(pb.GetDefaultAgentRequest(), metadata=admin(agent_queue))
    assert reply.agent.id == a1.id


async def test_no_enabled_agent_means_no_default(agent_queue: Running) -> None:
    boss(agent_queue.db)
    await create(agent_queue, "off", enabled=False)
    reply = await agent_queue.stub.GetDefaultAgent(pb.GetDefaultAgentRequest(), metadata=admin(agent_queue))
    assert not reply.HasField("agent")


async def test_agent_crud(agent_queue: Running) -> None:
    boss(agent_queue.db)
    policy = pb.ToolPolicy(allow=pb.ToolNameList(names=["calculate"]))
    made = await create(agent_queue, "helper", model="m1", fallback_model="m2", tool_policy=policy)
    assert made.id.startswith("agt_") and made.model == "m1" and list(made.tool_policy.allow.names) == ["calculate"]
    by_id = await agent_queue.stub.GetAgent(pb.GetAgentRequest(id=made.id), metadata=admin(agent_queue))
    by_name = await agent_queue.stub.GetAgentByName(pb.GetAgentByNameRequest(name="helper"), metadata=admin(agent_queue))
    assert by_id.agent == made == by_name.agent

    updated = (await agent_queue.stub.UpdateAgent(
        pb.UpdateAgentRequest(id=made.id, system_prompt="new", tool_policy=pb.ToolPolicy(deny=pb.ToolNameList(names=["x"]))),
        metadata=admin(agent_queue),
    )).agent
    # Only the given fields change; a given policy replaces the whole policy.
    assert updated.system_prompt == "new" and updated.model == "m1" and updated.name == "helper"
    assert not updated.tool_policy.HasField("allow") and list(updated.tool_policy.deny.names) == ["x"]

    listed = await agent_queue.stub.ListAgents(pb.ListAgentsRequest(), metadata=admin(agent_queue))
    assert [a.id for a in listed.agents] == [made.id]
    await agent_queue.stub.DeleteAgent(pb.DeleteAgentRequest(id=made.id), metadata=admin(agent_queue))
    assert not (await agent_queue.stub.GetAgent(pb.GetAgentRequest(id=made.id), metadata=admin(agent_queue))).HasField("agent")


async def test_agent_names_are_unique(agent_queue: Running) -> None:
    boss(agent_queue.db)
    await create(agent_queue, "helper")
    other = await create(agent_queue, "other")
    duplicate = await rpc_error(create(agent_queue, "helper"))
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    rename = await rpc_error(agent_queue.stub.UpdateAgent(pb.UpdateAgentRequest(id=other.id, name="helper"), metadata=admin(agent_queue)))
    assert rename.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_unknown_or_malformed_agent_ids(agent_queue: Running) -> None:
    boss(agent_queue.db)
    unknown = "agt_" + "0" * 32
    for call in (
        agent_queue.stub.UpdateAgent(pb.UpdateAgentRequest(id=unknown, name="x"), metadata=admin(agent_queue)),
        agent_queue.stub.DeleteAgent(pb.DeleteAgentRequest(id=unknown), metadata=admin(agent_queue)),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    malformed = await rpc_error(agent_queue.stub.GetAgent(pb.GetAgentRequest(id="skl_" + "0" * 32), metadata=admin(agent_queue)))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(malformed) == ["id"]
    nameless = await rpc_error(create(agent_queue, ""))
    assert violated_fields(nameless) == ["name"]


async def test_agents_are_admin_only(agent_queue: Running) -> None:
    alice(agent_queue.db)
    error = await rpc_error(agent_queue.stub.ListAgents(pb.ListAgentsRequest(), metadata=bearer(agent_queue.issuer.token("user_alice"))))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
