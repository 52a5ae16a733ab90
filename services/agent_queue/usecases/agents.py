"""Agent use cases (admin): list, get, default, by name, create, update, delete."""

from __future__ import annotations

import uuid

from services.agent_queue.domain.agents import Agent, AgentFields, check_agent_name
from services.agent_queue.store import agents as store
from services.agent_queue.usecases.deps import Deps
from zenthor import ids
from zenthor.errors import NotFound
from zenthor.pagination import Page, PageRequest, next_token

AGENT_NOT_FOUND = "Agent not found"


async def list_agents(deps: Deps, page: PageRequest) -> Page[Agent]:
    async with deps.uow() as uow:
        found = await store.list_agents(uow.conn, page)
    return Page(found, next_token([a.id for a in found], page.size))


async def get_agent(deps: Deps, agent_id: uuid.UUID) -> Agent | None:
    async with deps.uow() as uow:
        return await store.get_agent(uow.conn, agent_id)


async def get_default_agent(deps: Deps) -> Agent | None:
    """The oldest enabled agent, as the original's default agent."""
    async with deps.uow() as uow:
        return await store.oldest_enabled_agent(uow.conn)


async def get_agent_by_name(deps: Deps, name: str) -> Agent | None:
    check_agent_name(name)
    async with deps.uow() as uow:
        return await store.get_agent_by_name(uow.conn, name)


async def create_agent(deps: Deps, fields: AgentFields) -> Agent:
    fields.checked()
    async with deps.uow() as uow:
        agent = await store.insert_agent(uow.conn, ids.AGENT.new(), fields, deps.clock())
        await uow.commit()
    return agent


async def update_agent(deps: Deps, agent_id: uuid.UUID, fields: AgentFields) -> Agent:
    """Patches the given fields; a given tool policy replaces the whole policy."""
    fields.checked()
    async with deps.uow() as uow:
        agent = await store.update_agent(uow.conn, agent_id, fields)
        if agent is None:
            raise NotFound(AGENT_NOT_FOUND)
        await uow.commit()
    return agent


async def delete_agent(deps: Deps, agent_id: uuid.UUID) -> None:
    """Hard delete; conversations keep the dangling id, as in the original."""
    async with deps.uow() as uow:
        if not await store.delete_agent(uow.conn, agent_id):
            raise NotFound(AGENT_NOT_FOUND)
        await uow.commit()
