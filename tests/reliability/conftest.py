"""Crash and outage scenarios: real processes killed with SIGKILL, a real PostgreSQL and Temporal
stopped and started again. Each scenario counts what it lost, duplicated and left stuck; the
session summary prints one line per scenario (`make test` runs the small version of each,
`make soak` the full size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.service.conftest import identity  # noqa: F401  (fixture)
from tests.workflows.conftest import client, task_queue, temporal_address, temporal_env  # noqa: F401  (fixtures)


@dataclass(frozen=True)
class Tally:
    """What one scenario counted. `lost`, `duplicated` and `stuck` must be 0 (or, for a killed
    sender, duplicates no more than the sends it had not acknowledged)."""

    scenario: str
    lost: int
    duplicated: int
    stuck: int
    details: str = ""

    def line(self) -> str:
        return f"{self.scenario}: lost {self.lost}, duplicated {self.duplicated}, stuck {self.stuck}  ({self.details})"


TALLIES = pytest.StashKey[list[Tally]]()

Record = Callable[[Tally], None]


@pytest.fixture
def record_tally(request: pytest.FixtureRequest) -> Record:
    """Records a scenario's counts for the summary (before the test asserts on them, so a
    failing scenario still shows its figures)."""

    def record(tally: Tally) -> None:
        request.config.stash.setdefault(TALLIES, []).append(tally)
        print(tally.line())

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tallies = config.stash.get(TALLIES, [])
    if tallies:
        terminalreporter.section("crash and outage scenarios")
        for tally in tallies:
            terminalreporter.write_line(tally.line())
