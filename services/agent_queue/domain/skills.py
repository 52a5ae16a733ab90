"""Skills: per-user prompt/tool-policy add-ons (owner-scoped, docs/hardening.md #31), with
unowned "legacy" skills as a shared fallback."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.agent_queue.domain.policy import ToolPolicy, check_policy
from zenthor.validate import optional_text, required_text

MAX_SKILL_NAME = 100
MAX_DESCRIPTION = 2_000
MAX_SYSTEM_PROMPT = 100_000


def check_skill_name(name: str, field: str = "name") -> str:
    return required_text(name, field, max_chars=MAX_SKILL_NAME)


@dataclass(frozen=True)
class SkillConfig:
    system_prompt: str | None = None
    tool_policy: ToolPolicy | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.system_prompt is not None:
            data["systemPrompt"] = self.system_prompt
        if self.tool_policy is not None:
            data["toolPolicy"] = self.tool_policy.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SkillConfig | None:
        if data is None:
            return None
        return cls(system_prompt=data.get("systemPrompt"), tool_policy=ToolPolicy.from_json(data.get("toolPolicy")))


@dataclass(frozen=True)
class Skill:
    id: uuid.UUID
    owner_user_id: uuid.UUID | None
    name: str
    description: str
    enabled: bool
    config: SkillConfig | None
    created_at: datetime


@dataclass(frozen=True)
class SkillFields:
    """The fields a create sets or an update patches (None: not given)."""

    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    config: SkillConfig | None = None

    def checked(self) -> SkillFields:
        if self.name is not None:
            check_skill_name(self.name)
        optional_text(self.description, "description", max_chars=MAX_DESCRIPTION)
        if self.config is not None:
            optional_text(self.config.system_prompt, "config.system_prompt", max_chars=MAX_SYSTEM_PROMPT)
            check_policy(self.config.tool_policy, "config.tool_policy")
        return self


def may_change(skill: Skill, user_id: uuid.UUID, is_admin: bool) -> bool:
    """Toggle/update: the caller's own skill, or (admins only) an unowned one, which the
    change adopts. Other users' skills behave as missing: changing one is silently a no-op."""
    if skill.owner_user_id is None:
        return is_admin
    return skill.owner_user_id == user_id


def may_delete(skill: Skill, user_id: uuid.UUID, is_admin: bool) -> bool:
    """The caller's own skill; an unowned one only by an admin (any admin)."""
    return may_change(skill, user_id, is_admin)


def adopted_owner(skill: Skill, user_id: uuid.UUID) -> uuid.UUID:
    """Changing an unowned skill adopts it: it becomes the changer's."""
    return skill.owner_user_id or user_id
