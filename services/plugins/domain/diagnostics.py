"""Diagnostics: the agent runtime's activation result per plugin name. They are kept apart from
definitions because the runtime posts both concurrently at start-up, so a result may arrive
before the definition it describes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from zenthor.validate import required_text


class DiagnosticStatus(enum.Enum):
    ACTIVATED = "activated"
    # A tool is already owned by another active plugin.
    CONFLICT = "conflict"
    # The manifest failed validation in the runtime.
    INVALID = "invalid"


@dataclass(frozen=True)
class DiagnosticResult:
    """The runtime's last activation result for one plugin name."""

    status: DiagnosticStatus
    messages: tuple[str, ...]
    last_diagnostic_at: datetime


@dataclass(frozen=True)
class Diagnostic:
    """One plugin name as the diagnostics list shows it: whether a definition of that name is
    stored, and its last result (None: the runtime has posted none yet)."""

    name: str
    definition_exists: bool
    result: DiagnosticResult | None


@dataclass(frozen=True)
class DiagnosticFields:
    """A result the runtime posts for the plugin `name`."""

    name: str
    status: DiagnosticStatus
    messages: tuple[str, ...]

    def checked(self) -> DiagnosticFields:
        required_text(self.name, "name")
        return self
