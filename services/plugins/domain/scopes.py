"""Scope layers: installs and policies are set on a (workspace scope, agent, channel) layer,
and a more specific layer overrides a less specific one."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from zenthor.validate import required_text


class Channel(enum.Enum):
    WEB = "web"
    WHATSAPP = "whatsapp"


@dataclass(frozen=True)
class Scope:
    """One scope layer: an absent agent / channel means "all" and matches only absent."""

    workspace_scope: str
    agent_id: uuid.UUID | None
    channel: Channel | None

    def checked(self) -> Scope:
        required_text(self.workspace_scope, "workspace_scope")
        return self


def layers(scope: Scope) -> list[Scope]:
    """The layers `scope` resolves over, least to most specific, (agent, -) above (-, channel);
    repeats dropped, since a layer seen twice changes neither resolution."""
    s = scope.workspace_scope
    unique: list[Scope] = []
    for layer in (
        Scope(s, None, None),
        Scope(s, None, scope.channel),
        Scope(s, scope.agent_id, None),
        Scope(s, scope.agent_id, scope.channel),
    ):
        if layer not in unique:
            unique.append(layer)
    return unique
