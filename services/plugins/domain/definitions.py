"""Plugin definitions: one per name (docs/hardening.md #24), each carrying a manifest that
satisfies the manifest schema, and the runtime's last diagnostic for that name."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.plugins.domain.diagnostics import DiagnosticResult
from services.plugins.domain.manifests import validate_manifest
from zenthor.validate import required_text


class DefinitionStatus(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass(frozen=True)
class Definition:
    id: uuid.UUID
    name: str
    version: str
    source: str
    status: DefinitionStatus
    manifest: dict[str, Any]
    checksum: str | None
    created_at: datetime
    updated_at: datetime
    diagnostic: DiagnosticResult | None


@dataclass(frozen=True)
class DefinitionFields:
    """What an upsert sets on the definition named `name`; everything but the name is replaced,
    so an absent checksum clears a stored one."""

    name: str
    version: str
    source: str
    status: DefinitionStatus
    # None when the request carried no manifest (refused by `checked`).
    manifest: dict[str, Any] | None
    checksum: str | None

    def checked(self) -> DefinitionFields:
        required_text(self.name, "name")
        required_text(self.version, "version")
        required_text(self.source, "source")
        validate_manifest(self.manifest)
        return self
