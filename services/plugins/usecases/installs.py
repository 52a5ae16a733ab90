"""Install use cases: admins upsert and list installs, the runtime reads the effective set."""

from __future__ import annotations

from services.plugins.domain.installs import Install, InstallFields, effective_install_set
from services.plugins.domain.scopes import Scope
from services.plugins.store import installs as store
from services.plugins.usecases.deps import Deps
from zenthor import ids
from zenthor.pagination import Page, PageRequest, next_token


async def upsert_install(deps: Deps, fields: InstallFields) -> tuple[Install, bool]:
    """The install as stored, and whether it was created."""
    fields.checked()
    async with deps.uow() as uow:
        result = await store.upsert_install(
            uow.conn, fields, ids.PLUGIN_INSTALL.new(), deps.clock()
        )
        await uow.commit()
    return result


async def list_installs(deps: Deps, page: PageRequest) -> Page[Install]:
    async with deps.uow() as uow:
        found = await store.list_installs(uow.conn, page)
    return Page(found, next_token([x.id for x in found], page.size))


async def get_effective_install_set(deps: Deps, scope: Scope) -> list[Install]:
    scope.checked()
    async with deps.uow() as uow:
        by_layer = await store.installs_by_layer(uow.conn, scope)
    return effective_install_set(by_layer)
