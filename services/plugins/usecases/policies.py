"""Policy use cases: admins upsert and list tool policies, the runtime reads the effective one."""

from __future__ import annotations

from services.plugins.domain.policies import EffectivePolicy, Policy, PolicyFields, effective_policy
from services.plugins.domain.scopes import Scope
from services.plugins.store import policies as store
from services.plugins.usecases.deps import Deps
from zenthor import ids
from zenthor.pagination import Page, PageRequest, next_token


async def upsert_policy(deps: Deps, fields: PolicyFields) -> tuple[Policy, bool]:
    """The policy as stored, and whether it was created."""
    fields.checked()
    async with deps.uow() as uow:
        result = await store.upsert_policy(uow.conn, fields, ids.PLUGIN_POLICY.new(), deps.clock())
        await uow.commit()
    return result


async def list_policies(deps: Deps, page: PageRequest) -> Page[Policy]:
    async with deps.uow() as uow:
        found = await store.list_policies(uow.conn, page)
    return Page(found, next_token([x.id for x in found], page.size))


async def get_effective_policy(deps: Deps, scope: Scope) -> EffectivePolicy:
    scope.checked()
    async with deps.uow() as uow:
        by_layer = await store.policies_by_layer(uow.conn, scope)
    return effective_policy(by_layer)
