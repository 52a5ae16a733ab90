"""Tool policies: allow / deny lists of tool names at one scope layer, and the effective policy
a scope resolves to. An absent list restricts nothing; an empty allow list allows nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.plugins.domain.scopes import Scope
from zenthor.errors import InvalidArgument


@dataclass(frozen=True)
class Policy:
    id: uuid.UUID
    scope: Scope
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PolicyFields:
    """What an upsert sets on the policy of `scope`; an absent list removes a stored one."""

    scope: Scope
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None

    def checked(self) -> PolicyFields:
        self.scope.checked()
        check_tool_names(self.allow, "allow")
        check_tool_names(self.deny, "deny")
        return self


def check_tool_names(names: tuple[str, ...] | None, field: str) -> None:
    """Every name of the list `field` is non-blank (INVALID_ARGUMENT naming the entry)."""
    for n, name in enumerate(names or ()):
        if not name.strip():
            raise InvalidArgument(f"{field}.tool_names[{n}]", "must not be empty")


@dataclass(frozen=True)
class EffectivePolicy:
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None


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
