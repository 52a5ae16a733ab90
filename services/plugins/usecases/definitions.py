"""Definition use cases: the runtime upserts definitions by name, admins list them."""

from __future__ import annotations

from services.plugins.domain.definitions import Definition, DefinitionFields
from services.plugins.store import definitions as store
from services.plugins.usecases.deps import Deps
from zenthor import ids
from zenthor.pagination import KeyPageRequest, Page, next_key_token


async def upsert_definition(deps: Deps, fields: DefinitionFields) -> tuple[Definition, bool]:
    """The definition as stored, and whether it was created."""
    fields.checked()
    async with deps.uow() as uow:
        result = await store.upsert_definition(
            uow.conn, fields, ids.PLUGIN_DEFINITION.new(), deps.clock()
        )
        await uow.commit()
    return result


async def list_definitions(deps: Deps, page: KeyPageRequest) -> Page[Definition]:
    async with deps.uow() as uow:
        found = await store.list_definitions(uow.conn, page)
    return Page(found, next_key_token([x.name for x in found], page.size))
