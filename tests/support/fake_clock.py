"""A clock the test moves by hand, injected into a service's composition root (`clock=`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# Scenario fixture T0 = 1_700_000_000_000 ms.
T0 = datetime.fromtimestamp(1_700_000_000, UTC)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now
