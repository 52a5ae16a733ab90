"""Crash and outage scenarios: real processes killed with SIGKILL, a real PostgreSQL and Temporal
stopped and started again. Each scenario counts what it lost, duplicated and left stuck; the
session summary prints one line per scenario (`make test` runs the small version of each,
`make soak` the full size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.service.conftest import identity  # noqa: F401  (fixture)
from tests.support.pytest_plugin import add_summary_line
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


Record = Callable[[Tally], None]


@pytest.fixture
def record_tally(request: pytest.FixtureRequest) -> Record:
    """Records a scenario's counts for the summary (before the test asserts on them, so a
    failing scenario still shows its figures)."""

    def record(tally: Tally) -> None:
        add_summary_line(request.config, "crash and outage scenarios", tally.line())
        print(tally.line())

    return record

