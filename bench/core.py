"""The harness' vocabulary: options, the run context every case gets, and the case itself.

A *case* is one thing measured once per round (a drain, a latency series, a calls/s window);
it returns flat metrics (`{"rate": …, "cpu_server_ms_per_1k": …}`). A *figure* groups the cases
the issue's table compares side by side. Rounds interleave every case, in an order rotated
each round, so machine noise hits ours and the peers alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.stack import Stack

Metrics = dict[str, float]

# The table, in its order; `e` (CPU) and the RSS line are read off the drains.
FIGURES: dict[str, str] = {
    "a": "Job drain, one conversation per job (jobs/s)",
    "b": "Job drain over 50 conversations (jobs/s)",
    "c": "pgqueuer drain, same Postgres (jobs/s)",
    "d": "Raw-SQL floor: SKIP LOCKED claim + guarded complete, psycopg (jobs/s)",
    "e": "CPU per 1,000 jobs: client / server / other services / Postgres (ms)",
    "f": "Bare grpc.health.v1 Health.Check on the agent_queue server (calls/s)",
    "g": "EnqueueJob → job seen on WatchPendingJobs (ms)",
    "h": "Outbound drain: ClaimOutbound(max 10) + CompleteOutbound (msgs/s)",
    "i": "Claim statement cost as the pending backlog grows (EXPLAIN ANALYZE)",
    "j": "UpdateStreamingContent → WatchConversation, 200 ms cadence (ms)",
    "k": "ResolveApproval → WaitForApproval wakes (ms)",
    "l": "Auth chain: calls/s by auth mode (5 workers)",
    "rss": "RSS per service under the drains (MB)",
}


@dataclass(frozen=True)
class Options:
    quick: bool
    rounds: int
    jobs: int
    outbound: int
    per_recipient: int
    workers: int
    claim_batch: int
    call_seconds: float
    latency_samples: int
    backlog_sizes: tuple[int, ...]
    backlog_conversations: int
    explain_repeats: int
    profile: bool
    figures: frozenset[str]
    profile_all: bool = False
    profile_native: bool = False


@dataclass
class Bench:
    """What a case runs against: the stack, the options, and the progress printer."""

    stack: Stack
    options: Options
    started: float = field(default_factory=time.perf_counter)
    round: int = 0
    # Peak RSS of every service seen during any drain.
    rss_peak_mb: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    # A list during a profile run: each drain then records its Postgres statements into it
    # (Stack.statement_stats); None otherwise.
    statements: list[dict[str, Any]] | None = None
    # During a profile run: the servers' py-spy recordings, not started yet (see `profiled`).
    recordings: list[AbstractAsyncContextManager[Any]] | None = None

    @asynccontextmanager
    async def profiled(self) -> AsyncIterator[None]:
        """Samples the servers for the block, if a profile run handed recordings over that no
        block has taken yet. A drain wraps its measured window in it, so a profile shows the
        drain and not the setup before it (filling the outbound queue through EnqueueOutbound
        was 15% of delivery's samples); the harness wraps a whole case that has no such window."""
        recordings, self.recordings = self.recordings, None
        async with AsyncExitStack() as stack:
            for recording in recordings or ():
                await stack.enter_async_context(recording)
            yield

    def say(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        line = f"[bench {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}"
        self.lines.append(line)
        print(line, flush=True)

    def note_rss(self, peaks: dict[str, float]) -> None:
        for name, mb in peaks.items():
            self.rss_peak_mb[name] = max(self.rss_peak_mb.get(name, 0.0), mb)


@dataclass(frozen=True)
class Case:
    """One measurement per round. A case whose `run` measures several variants in one window
    (finer interleaving than rounds give) returns `{variant name: metrics}` and sets `multi`;
    each variant is then reported as a case of its own."""

    figure: str
    name: str
    run: Callable[[Bench], Awaitable[Any]]
    # The metric printed on the progress line, with its unit.
    headline: tuple[str, str] = ("rate", "/s")
    multi: bool = False
    # A latency case: runs once the stack is quiet (Stack.wait_quiet), as its goal assumes.
    quiet: bool = False
    # A drain: it times a window of its own (bench.jobs.measured), and a profile covers only it.
    windowed: bool = False
