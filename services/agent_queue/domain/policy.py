"""Tool allow/deny lists shared by agents and skills. Presence matters: an absent `allow`
means "no restriction", a present empty one "nothing allowed"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zenthor.errors import InvalidArgument
from zenthor.validate import required_text

MAX_TOOLS = 200
MAX_TOOL_NAME = 100


@dataclass(frozen=True)
class ToolPolicy:
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.allow is not None:
            data["allow"] = list(self.allow)
        if self.deny is not None:
            data["deny"] = list(self.deny)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ToolPolicy | None:
        if data is None:
            return None
        allow, deny = data.get("allow"), data.get("deny")
        return cls(
            allow=None if allow is None else tuple(allow),
            deny=None if deny is None else tuple(deny),
        )


def check_tool_names(names: tuple[str, ...] | None, field: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    if len(names) > MAX_TOOLS:
        raise InvalidArgument(field, f"must hold at most {MAX_TOOLS} tool names")
    for i, name in enumerate(names):
        required_text(name, f"{field}[{i}]", max_chars=MAX_TOOL_NAME)
    return names


def check_policy(policy: ToolPolicy | None, field: str) -> ToolPolicy | None:
    if policy is None:
        return None
    check_tool_names(policy.allow, f"{field}.allow.names")
    check_tool_names(policy.deny, f"{field}.deny.names")
    return policy
