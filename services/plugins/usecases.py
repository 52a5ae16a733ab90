"""Plugin registry use cases: one async function per operation, each in one unit of work."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.plugins import domain, store
from services.plugins.domain import (
    Definition,
    DefinitionStatus,
    Diagnostic,
    DiagnosticStatus,
    EffectivePolicy,
    Install,
    Policy,
    Scope,
)
from zenthor import ids
from zenthor.db import UnitOfWorkFactory
from zenthor.errors import InvalidArgument
from zenthor.pagination import Page, PageRequest, next_token


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]


async def upsert_definition(
    deps: Deps,
    *,
    name: str,
    version: str,
    source: str,
    status: DefinitionStatus,
    manifest: Any,
    checksum: str | None,
) -> tuple[Definition, bool]:
    valid = domain.validate_manifest(manifest)
    now = deps.clock()
    candidate = Definition(
        id=ids.PLUGIN_DEFINITION.new(),
        name=name,
        version=version,
        source=source,
        status=status,
        manifest=valid,
        checksum=checksum,
        created_at=now,
        updated_at=now,
    )
    async with deps.uow() as uow:
        result = await store.upsert_definition(uow.conn, candidate)
        await uow.commit()
    return result


async def upsert_install(
    deps: Deps, *, scope: Scope, plugin_name: str, enabled: bool, config: dict[str, Any] | None
) -> tuple[Install, bool]:
    now = deps.clock()
    candidate = Install(
        id=ids.PLUGIN_INSTALL.new(),
        scope=scope,
        plugin_name=plugin_name,
        enabled=enabled,
        config=config,
        created_at=now,
        updated_at=now,
    )
    async with deps.uow() as uow:
        result = await store.upsert_install(uow.conn, candidate)
        await uow.commit()
    return result


async def upsert_policy(
    deps: Deps, *, scope: Scope, allow: tuple[str, ...] | None, deny: tuple[str, ...] | None
) -> tuple[Policy, bool]:
    now = deps.clock()
    candidate = Policy(
        id=ids.PLUGIN_POLICY.new(),
        scope=scope,
        allow=allow,
        deny=deny,
        created_at=now,
        updated_at=now,
    )
    async with deps.uow() as uow:
        result = await store.upsert_policy(uow.conn, candidate)
        await uow.commit()
    return result


async def upsert_diagnostics(
    deps: Deps, *, name: str, status: DiagnosticStatus, messages: tuple[str, ...]
) -> Diagnostic:
    diagnostic = Diagnostic(
        name=name,
        status=status,
        messages=messages,
        last_diagnostic_at=deps.clock(),
        definition_exists=False,
    )
    async with deps.uow() as uow:
        stored = await store.upsert_diagnostic(uow.conn, diagnostic)
        await uow.commit()
    return stored


async def list_definitions(deps: Deps, page: PageRequest) -> Page[Definition]:
    async with deps.uow() as uow:
        rows = await store.list_definitions(uow.conn, page)
    return Page(rows, next_token([r.id for r in rows], page.size))


async def list_installs(deps: Deps, page: PageRequest) -> Page[Install]:
    async with deps.uow() as uow:
        rows = await store.list_installs(uow.conn, page)
    return Page(rows, next_token([r.id for r in rows], page.size))


async def list_policies(deps: Deps, page: PageRequest) -> Page[Policy]:
    async with deps.uow() as uow:
        rows = await store.list_policies(uow.conn, page)
    return Page(rows, next_token([r.id for r in rows], page.size))


def _name_token(name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after_name": name}).encode()).decode().rstrip("=")


def _name_from_token(token: str) -> str | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
        return str(data["after_name"])
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("page_token", "is not a token this service issued") from e


async def list_diagnostics(deps: Deps, size: int, page_token: str) -> Page[Diagnostic | str]:
    """Diagnostics by name: one per definition (a bare name when none was posted) and one per
    name diagnosed before its definition was stored."""
    after = _name_from_token(page_token)
    async with deps.uow() as uow:
        rows = await store.list_diagnostics(uow.conn, after, size)
    items: list[Diagnostic | str] = [
        Diagnostic(
            name=r["name"],
            status=DiagnosticStatus(r["status"]),
            messages=tuple(r["messages"]),
            last_diagnostic_at=r["last_diagnostic_at"],
            definition_exists=r["definition_id"] is not None,
        )
        if r["status"]
        else r["name"]
        for r in rows
    ]
    token = _name_token(rows[-1]["name"]) if rows and len(rows) == size else ""
    return Page(items, token)


async def effective_install_set(deps: Deps, scope: Scope) -> list[Install]:
    async with deps.uow() as uow:
        by_layer = [
            await store.installs_at(uow.conn, layer) for layer in domain.unique_layers(scope)
        ]
    return domain.effective_install_set(by_layer)


async def effective_policy(deps: Deps, scope: Scope) -> EffectivePolicy:
    async with deps.uow() as uow:
        by_layer = [
            await store.policies_at(uow.conn, layer) for layer in domain.unique_layers(scope)
        ]
    return domain.effective_policy(by_layer)
