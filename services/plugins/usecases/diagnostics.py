"""Diagnostic use cases: the runtime posts activation results by plugin name and lists them."""

from __future__ import annotations

from services.plugins.domain.diagnostics import Diagnostic, DiagnosticFields
from services.plugins.store import diagnostics as store
from services.plugins.usecases.deps import Deps
from zenthor.pagination import KeyPageRequest, Page, next_key_token


async def upsert_diagnostics(deps: Deps, fields: DiagnosticFields) -> Diagnostic:
    fields.checked()
    async with deps.uow() as uow:
        stored = await store.upsert_diagnostic(uow.conn, fields, deps.clock())
        await uow.commit()
    return stored


async def list_diagnostics(deps: Deps, page: KeyPageRequest) -> Page[Diagnostic]:
    """By name: one per definition (without a result until one is posted) and one per name
    diagnosed before its definition was stored."""
    async with deps.uow() as uow:
        found = await store.list_diagnostics(uow.conn, page)
    return Page(found, next_key_token([x.name for x in found], page.size))
