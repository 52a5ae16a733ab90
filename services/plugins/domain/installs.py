"""Plugin installs: a plugin switched on or off (with its config) at one scope layer, and the
effective install set a scope resolves to."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.plugins.domain.scopes import Scope
from zenthor.validate import required_text


@dataclass(frozen=True)
class Install:
    id: uuid.UUID
    scope: Scope
    plugin_name: str
    enabled: bool
    config: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class InstallFields:
    """What an upsert sets on the install of `plugin_name` at `scope`; an absent config clears
    a stored one. The name is not checked against the definitions."""

    scope: Scope
    plugin_name: str
    enabled: bool
    config: dict[str, Any] | None

    def checked(self) -> InstallFields:
        self.scope.checked()
        required_text(self.plugin_name, "plugin_name")
        return self


def effective_install_set(by_layer: Sequence[Sequence[Install]]) -> list[Install]:
    """Most specific install per plugin name (disabled ones included, the caller filters on
    `enabled`), in order of first sight."""
    chosen: dict[str, Install] = {}
    for rows in by_layer:
        for install in rows:
            chosen[install.plugin_name] = install  # a re-assigned key keeps its first position
    return list(chosen.values())
