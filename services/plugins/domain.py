"""Plugin registry rules: the manifest JSON Schema (finding 25), scope layers and the two
"effective" resolutions (plugins.md §2). Plain data and functions, no I/O."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema

from zenthor.errors import InvalidArgument


class Channel(enum.Enum):
    WEB = "web"
    WHATSAPP = "whatsapp"


class DefinitionStatus(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class DiagnosticStatus(enum.Enum):
    ACTIVATED = "activated"
    CONFLICT = "conflict"
    INVALID = "invalid"


# The ONE manifest schema (finding 25): the agent-runtime manifest of plugins.md §4.2, which is
# what the runtime actually stores. Unknown keys are allowed (stored as given).
_NON_EMPTY_STRING: dict[str, Any] = {"type": "string", "minLength": 1}
MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Zenthor plugin manifest",
    "type": "object",
    "required": ["id", "version", "tools"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9-]+$"},
        "version": _NON_EMPTY_STRING,
        "tools": {"type": "array", "minItems": 1, "items": _NON_EMPTY_STRING},
        "riskLevel": {"enum": ["low", "medium", "high"], "default": "low"},
        "source": {"enum": ["builtin", "workspace", "remote"], "default": "workspace"},
        "channels": {"type": "array", "items": {"enum": ["web", "whatsapp"]}},
        "configSchema": {"type": "object"},
        "requiredPermissions": {"type": "array", "items": _NON_EMPTY_STRING},
        "description": {"type": "string"},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def manifest_issues(manifest: Any) -> list[tuple[str, str]]:
    """(dotted path, message) per schema violation, in path order; [] when valid."""
    issues = []
    for error in _VALIDATOR.iter_errors(manifest):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.validator_value, list):
            missing = [
                k for k in error.validator_value if isinstance(manifest, dict) and k not in manifest
            ]
            path = ".".join(filter(None, [path, missing[0] if missing else ""]))
        issues.append((path, error.message))
    return sorted(issues)


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """The manifest if it satisfies MANIFEST_SCHEMA; else INVALID_ARGUMENT naming the first
    violating field (`manifest.<path>`), all violations listed in the message."""
    issues = manifest_issues(manifest)
    if issues:
        field = ".".join(filter(None, ["manifest", issues[0][0]]))
        raise InvalidArgument(field, "; ".join(f"{p or '<root>'}: {m}" for p, m in issues))
    assert isinstance(manifest, dict)
    return manifest


@dataclass(frozen=True)
class Scope:
    """One scope layer: None agent / channel means "all" and matches only absent."""

    workspace_scope: str
    agent_id: uuid.UUID | None
    channel: Channel | None


def layers(scope: Scope) -> list[Scope]:
    """The four layers, least to most specific; (agent, -) ranks above (-, channel)."""
    s = scope.workspace_scope
    return [
        Scope(s, None, None),
        Scope(s, None, scope.channel),
        Scope(s, scope.agent_id, None),
        Scope(s, scope.agent_id, scope.channel),
    ]


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
    diagnostic_status: DiagnosticStatus | None = None
    diagnostic_messages: tuple[str, ...] = ()
    last_diagnostic_at: datetime | None = None


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
class Policy:
    id: uuid.UUID
    scope: Scope
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Diagnostic:
    name: str
    status: DiagnosticStatus
    messages: tuple[str, ...]
    last_diagnostic_at: datetime
    definition_exists: bool


@dataclass(frozen=True)
class EffectivePolicy:
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None


def effective_install_set(by_layer: Sequence[Sequence[Install]]) -> list[Install]:
    """Most specific install per plugin name (disabled ones included), in order of first sight."""
    chosen: dict[str, Install] = {}
    for rows in by_layer:
        for install in rows:
            chosen[install.plugin_name] = install  # a re-assigned key keeps its first position
    return list(chosen.values())


def effective_policy(by_layer: Sequence[Sequence[Policy]]) -> EffectivePolicy:
    """allow: the first present list, intersected with each later present list ([] counts);
    deny: every deny list concatenated, first occurrence kept, absent when empty."""
    allow: list[str] | None = None
    deny: list[str] = []
    for rows in by_layer:
        for policy in rows:
            if policy.allow is not None:
                allow = (
                    list(policy.allow) if allow is None else [n for n in allow if n in policy.allow]
                )
            for name in policy.deny or ():
                if name not in deny:
                    deny.append(name)
    return EffectivePolicy(
        allow=tuple(allow) if allow is not None else None, deny=tuple(deny) if deny else None
    )


def unique_layers(scope: Scope) -> list[Scope]:
    """The layers with repeats dropped (a repeated layer has no effect on either resolution)."""
    seen: list[Scope] = []
    for layer in layers(scope):
        if layer not in seen:
            seen.append(layer)
    return seen
