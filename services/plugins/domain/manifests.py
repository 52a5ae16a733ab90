"""The one plugin manifest JSON Schema every definition is validated against, each violation
an INVALID_ARGUMENT naming its field (docs/hardening.md #25)."""

from __future__ import annotations

from typing import Any

import jsonschema

from zenthor.errors import InvalidArgument

_NON_EMPTY_STRING: dict[str, Any] = {"type": "string", "minLength": 1}
# The manifest the agent runtime loads and stores: an id, a version and the tools it owns, plus
# optional risk level, source, channels, config schema, permissions and description. Unknown
# keys are allowed and stored as given.
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


def manifest_issues(manifest: object) -> list[tuple[str, str]]:
    """(dotted path, message) per schema violation, in path order; [] when valid. A missing
    required key is reported at its own path (`version`), not at its parent's."""
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


def validate_manifest(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest if it is present and satisfies MANIFEST_SCHEMA; else INVALID_ARGUMENT naming
    `manifest` or its first violating field (`manifest.<path>`), all violations listed in the
    message."""
    if manifest is None:
        raise InvalidArgument("manifest", "is required")
    issues = manifest_issues(manifest)
    if issues:
        field = ".".join(filter(None, ["manifest", issues[0][0]]))
        raise InvalidArgument(field, "; ".join(f"{p or '<root>'}: {m}" for p, m in issues))
    return manifest
