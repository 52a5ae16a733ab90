"""Skills over gRPC: seeding and legacy claims, owner-scoped for every signed-in user
(docs/hardening.md #31), unique names per owner (docs/hardening.md #24)."""

from __future__ import annotations

import asyncio

import grpc

from services.agent_queue.domain.recommended_skills import RECOMMENDED_SKILLS
from tests.service.agent_queue.test_conversation_context import add_skill
from tests.service.conftest import Running
from tests.support.builders import add_user, alice, bob, boss
from tests.support.grpc_client import bearer, rpc_error, service
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb


def as_user(aq: Running, external_id: str) -> tuple[tuple[str, str], ...]:
    return bearer(aq.issuer.token(external_id))


async def names(aq: Running, who: str, all_owners: bool = False) -> list[str]:
    reply = await aq.stub.ListSkills(pb.ListSkillsRequest(all_owners=all_owners), metadata=as_user(aq, who))
    return [s.name for s in reply.skills]


async def create(aq: Running, who: str, name: str, enabled: bool = True) -> pb.Skill:
    reply = await aq.stub.CreateSkill(
        pb.CreateSkillRequest(
            name=name,
            description="d",
            enabled=enabled,
            config=pb.SkillConfig(system_prompt="p", tool_policy=pb.ToolPolicy(deny=pb.ToolNameList(names=["x"]))),
        ),
        metadata=as_user(aq, who),
    )
    return reply.skill


# --- seeding the recommended skills ---


async def test_seeding_adds_the_recommended_skills_the_caller_lacks_once(agent_queue: Running) -> None:
    boss_id = boss(agent_queue.db)
    add_skill(agent_queue.db, "weekly planner", owner=boss_id)
    first = await agent_queue.stub.SeedRecommendedSkills(pb.SeedRecommendedSkillsRequest(), metadata=as_user(agent_queue, "user_boss"))
    assert (first.created, first.existing, first.total) == (10, 1, 11)
    second = await agent_queue.stub.SeedRecommendedSkills(pb.SeedRecommendedSkillsRequest(), metadata=as_user(agent_queue, "user_boss"))
    assert (second.created, second.existing, second.total) == (0, 11, 11)
    seeded = (await agent_queue.stub.GetSkillByName(
        pb.GetSkillByNameRequest(name="Todoist Execution Assistant"), metadata=as_user(agent_queue, "user_boss")
    )).skill
    assert seeded.enabled and seeded.owner_user_id == ids.USER.format(boss_id)
    assert "todoist_capture_task" in seeded.config.tool_policy.allow.names
    assert not seeded.config.tool_policy.HasField("deny")
    assert len(RECOMMENDED_SKILLS) == 11


async def test_concurrent_seeds_never_duplicate(agent_queue: Running) -> None:
    alice(agent_queue.db)  # members seed their own too (docs/hardening.md #31)
    replies = await asyncio.gather(
        *(agent_queue.stub.SeedRecommendedSkills(pb.SeedRecommendedSkillsRequest(), metadata=as_user(agent_queue, "user_alice")) for _ in range(5))
    )
    assert sum(r.created for r in replies) == 11
    assert agent_queue.db.sql("SELECT count(*) FROM agent_queue.skills") == [(11,)]


# --- legacy (unowned) skills ---


async def test_legacy_skills_are_visible_until_adopted_by_a_change(agent_queue: Running) -> None:
    boss(agent_queue.db)
    add_user(agent_queue.db, "user_ops", email="ops@example.com", role="admin")
    l1 = add_skill(agent_queue.db, "L1", owner=None)
    add_skill(agent_queue.db, "L2", owner=None)
    assert await names(agent_queue, "user_boss") == ["L1", "L2"]

    toggled = (await agent_queue.stub.ToggleSkill(pb.ToggleSkillRequest(id=l1), metadata=as_user(agent_queue, "user_boss"))).skill
    assert not toggled.enabled and toggled.owner_user_id.startswith("usr_")
    assert await names(agent_queue, "user_boss") == ["L1"]

    other_admin = await agent_queue.stub.UpdateSkill(
        pb.UpdateSkillRequest(id=l1, name="mine now"), metadata=as_user(agent_queue, "user_ops")
    )
    assert not other_admin.HasField("skill")
    assert agent_queue.db.sql("SELECT name FROM agent_queue.skills WHERE name = 'L1'") == [("L1",)]


# --- docs/hardening.md #31: members manage their own skills ---


async def test_members_manage_their_own_skills_and_never_see_others(agent_queue: Running) -> None:
    alice(agent_queue.db)
    bob(agent_queue.db)
    mine = await create(agent_queue, "user_alice", "Notes")
    bobs = await create(agent_queue, "user_bob", "Notes")  # names are per owner
    assert await names(agent_queue, "user_alice") == ["Notes"]

    updated = (await agent_queue.stub.UpdateSkill(
        pb.UpdateSkillRequest(id=mine.id, description="better", config=pb.SkillConfig(system_prompt="q")),
        metadata=as_user(agent_queue, "user_alice"),
    )).skill
    assert updated.description == "better" and updated.config.system_prompt == "q"
    assert not updated.config.HasField("tool_policy")  # a given config replaces the whole config
    toggled = (await agent_queue.stub.ToggleSkill(pb.ToggleSkillRequest(id=mine.id), metadata=as_user(agent_queue, "user_alice"))).skill
    assert not toggled.enabled

    # Bob's skill behaves as missing for Alice.
    for call in (
        agent_queue.stub.ToggleSkill(pb.ToggleSkillRequest(id=bobs.id), metadata=as_user(agent_queue, "user_alice")),
        agent_queue.stub.UpdateSkill(pb.UpdateSkillRequest(id=bobs.id, name="x"), metadata=as_user(agent_queue, "user_alice")),
    ):
        assert not (await call).HasField("skill")
    gone = await agent_queue.stub.DeleteSkill(pb.DeleteSkillRequest(id=bobs.id), metadata=as_user(agent_queue, "user_alice"))
    assert not gone.deleted
    by_name = await agent_queue.stub.GetSkillByName(pb.GetSkillByNameRequest(name="Notes"), metadata=as_user(agent_queue, "user_alice"))
    assert by_name.skill.id == mine.id

    deleted = await agent_queue.stub.DeleteSkill(pb.DeleteSkillRequest(id=mine.id), metadata=as_user(agent_queue, "user_alice"))
    assert deleted.deleted
    assert await names(agent_queue, "user_bob") == ["Notes"]


async def test_members_only_read_legacy_skills(agent_queue: Running) -> None:
    alice(agent_queue.db)
    l1 = add_skill(agent_queue.db, "L1", owner=None)
    assert await names(agent_queue, "user_alice") == ["L1"]
    assert not (await agent_queue.stub.ToggleSkill(pb.ToggleSkillRequest(id=l1), metadata=as_user(agent_queue, "user_alice"))).HasField("skill")
    assert not (await agent_queue.stub.DeleteSkill(pb.DeleteSkillRequest(id=l1), metadata=as_user(agent_queue, "user_alice"))).deleted
    error = await rpc_error(agent_queue.stub.ClaimLegacySkills(pb.ClaimLegacySkillsRequest(), metadata=as_user(agent_queue, "user_alice")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_only_admins_list_every_owners_skills(agent_queue: Running) -> None:
    alice(agent_queue.db)
    boss(agent_queue.db)
    await create(agent_queue, "user_alice", "A")
    await create(agent_queue, "user_boss", "B")
    add_skill(agent_queue.db, "L", owner=None)
    assert await names(agent_queue, "user_boss", all_owners=True) == ["A", "B", "L"]
    error = await rpc_error(agent_queue.stub.ListSkills(pb.ListSkillsRequest(all_owners=True), metadata=as_user(agent_queue, "user_alice")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_skill_names_are_unique_per_owner_case_insensitively(agent_queue: Running) -> None:
    alice(agent_queue.db)
    first = await create(agent_queue, "user_alice", "Notes")
    error = await rpc_error(create(agent_queue, "user_alice", "notes"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    other = await create(agent_queue, "user_alice", "Other")
    rename = await rpc_error(agent_queue.stub.UpdateSkill(
        pb.UpdateSkillRequest(id=other.id, name="NOTES"), metadata=as_user(agent_queue, "user_alice")
    ))
    assert rename.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.name == "Notes"


# --- claim legacy and the operator backfill ---


async def test_claim_legacy_adopts_every_unowned_skill_but_name_clashes(agent_queue: Running) -> None:
    boss(agent_queue.db)
    await create(agent_queue, "user_boss", "Mine")
    for name in ("L1", "L2", "mine"):
        add_skill(agent_queue.db, name, owner=None)
    reply = await agent_queue.stub.ClaimLegacySkills(pb.ClaimLegacySkillsRequest(), metadata=as_user(agent_queue, "user_boss"))
    assert reply.adopted == 2
    assert await names(agent_queue, "user_boss") == ["Mine", "L1", "L2"]
    assert agent_queue.db.sql("SELECT name FROM agent_queue.skills WHERE owner_user_id IS NULL") == [("mine",)]


async def test_backfill_gives_unowned_skills_to_an_owner_idempotently(agent_queue: Running) -> None:
    owner = ids.USER.format(ids.USER.new())  # existence is not checked, as in the original
    add_skill(agent_queue.db, "L1", owner=None)
    add_skill(agent_queue.db, "L2", owner=None)
    add_skill(agent_queue.db, "O", owner=ids.USER.new())
    request = pb.BackfillSkillOwnersRequest(owner_user_id=owner)
    first = await agent_queue.stub.BackfillSkillOwners(request, metadata=service())
    second = await agent_queue.stub.BackfillSkillOwners(request, metadata=service())
    assert (first.updated, first.total, second.updated, second.total) == (2, 3, 0, 3)


async def test_skill_ids_and_names_are_validated(agent_queue: Running) -> None:
    alice(agent_queue.db)
    who = as_user(agent_queue, "user_alice")
    bad_id = await rpc_error(agent_queue.stub.ToggleSkill(pb.ToggleSkillRequest(id="agt_" + "0" * 32), metadata=who))
    assert bad_id.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(bad_id) == ["id"]
    unknown = await agent_queue.stub.ToggleSkill(pb.ToggleSkillRequest(id="skl_" + "0" * 32), metadata=who)
    assert not unknown.HasField("skill")  # a no-op, not an error, as in the original
    empty = await rpc_error(agent_queue.stub.CreateSkill(pb.CreateSkillRequest(name=" "), metadata=who))
    assert violated_fields(empty) == ["name"]
    bad_tool = await rpc_error(agent_queue.stub.CreateSkill(
        pb.CreateSkillRequest(name="n", config=pb.SkillConfig(tool_policy=pb.ToolPolicy(allow=pb.ToolNameList(names=[""])))),
        metadata=who,
    ))
    assert violated_fields(bad_tool) == ["config.tool_policy.allow.names[0]"]
