"""The one backoff rule: exponential in the attempt, capped, with equal jitter."""

from __future__ import annotations

import random

# The jitter's own generator: drawing from the `random` module's shared one would move its state
# under whoever else uses it (a seeded simulation, a property-based test generating data while a
# relay backs off in the same process).
_JITTER = random.Random()


def backoff_delay_s(attempt: int, rng: random.Random | None = None, *, base_s: float, cap_s: float) -> float:
    """Seconds to wait before attempt `attempt + 1` (`attempt` is 1-based).

    Equal jitter: the ceiling doubles per attempt from `base_s` up to `cap_s`, and the delay is
    drawn uniformly from the upper half of it — attempt 1 waits base/2..base, attempt 2
    base..2·base, … never more than `cap_s` and never zero, so retries of many failures spread
    out without any of them firing at once.
    """
    ceiling = min(cap_s, base_s * 2 ** max(attempt - 1, 0))
    return (rng or _JITTER).uniform(ceiling / 2, ceiling)
