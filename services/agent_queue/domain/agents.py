"""Agents: named model/prompt/tool-policy configurations (admin-managed, names unique:
docs/hardening.md #24)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.agent_queue.domain.policy import ToolPolicy, check_policy
from zenthor.validate import optional_text, required_text

MAX_AGENT_NAME = 100
MAX_DESCRIPTION = 2_000
MAX_SYSTEM_PROMPT = 100_000
MAX_MODEL = 200


def check_agent_name(name: str, field: str = "name") -> str:
    return required_text(name, field, max_chars=MAX_AGENT_NAME)


@dataclass(frozen=True)
class Agent:
    id: uuid.UUID
    name: str
    description: str
    system_prompt: str
    model: str | None
    fallback_model: str | None
    enabled: bool
    tool_policy: ToolPolicy | None
    created_at: datetime


@dataclass(frozen=True)
class AgentFields:
    """The fields a create sets or an update patches (None: not given)."""

    name: str | None = None
    description: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    fallback_model: str | None = None
    enabled: bool | None = None
    tool_policy: ToolPolicy | None = None

    def checked(self) -> AgentFields:
        if self.name is not None:
            check_agent_name(self.name)
        optional_text(self.description, "description", max_chars=MAX_DESCRIPTION)
        optional_text(self.system_prompt, "system_prompt", max_chars=MAX_SYSTEM_PROMPT)
        optional_text(self.model, "model", max_chars=MAX_MODEL)
        optional_text(self.fallback_model, "fallback_model", max_chars=MAX_MODEL)
        check_policy(self.tool_policy, "tool_policy")
        return self
