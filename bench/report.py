"""Turns the rounds into the report: spreads per case, the issue's goals as ratios (met or
missed, by what factor), and `bench/results/<date>.md` + `.json`."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.backlog import flatness
from bench.core import FIGURES
from bench.stats import Spread, spread

RSS_LIMIT_MB = 150.0
AUTH_CASE = "auth chain, same work"  # figure (l)'s one case, reported as three variants
LATENCY_LIMIT_MS = 10.0
PACKAGES = ("grpcio", "protobuf", "sqlalchemy", "psycopg", "asyncpg", "pgqueuer", "pyjwt", "structlog", "psutil", "py-spy")


@dataclass(frozen=True)
class ProfileRun:
    """What shows where a goal's time goes: its case run once more, these servers sampled."""

    figure: str
    case: str
    services: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"({self.figure}) {self.case}"


@dataclass(frozen=True)
class Goal:
    name: str
    # ">=": measured must reach target; "<=": measured must stay under it.
    sense: str
    target: float
    measured: Spread | None
    unit: str
    detail: str
    profile: ProfileRun | None = None

    @property
    def missed(self) -> bool:
        return self.factor is not None and self.factor < 1

    @property
    def factor(self) -> float | None:
        """How far past (>1) or short of (<1) the bar the median is."""
        if self.measured is None:
            return None
        value = self.measured.median
        if self.sense == ">=":
            return value / self.target
        return self.target / value if value else math.inf

    @property
    def verdict(self) -> str:
        factor = self.factor
        if factor is None:
            return "not measured"
        if factor >= 1:
            return f"met ({factor:.2f}× the bar)"
        return f"missed by {1 / factor:.1f}× ({factor:.2f} of the bar)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sense": self.sense,
            "target": self.target,
            "unit": self.unit,
            "measured": self.measured.as_dict() if self.measured else None,
            "factor": self.factor,
            "met": None if self.factor is None else self.factor >= 1,
            "verdict": self.verdict,
            "detail": self.detail,
            "profile": self.profile.key if self.profile else None,
        }


class Results:
    """Every case's metrics per round, in the order the rounds ran them."""

    def __init__(self) -> None:
        self.figure_of: dict[str, str] = {}
        self.rounds: dict[str, list[dict[str, float]]] = {}
        self.errors: dict[str, list[str]] = {}
        self.backlog: dict[str, Any] | None = None
        # ProfileRun.key → {"case", "services": {name: summarize(…)}, …}: one per profiled goal's run.
        self.profiles: dict[str, dict[str, Any]] = {}
        self.rss_peak_mb: dict[str, float] = {}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Results:
        """The results a written .json holds (to render its report again)."""
        results = cls()
        for case, found in document["figures"].items():
            results.figure_of[case] = found["figure"]
            results.rounds[case] = found["rounds"]
            if found.get("errors"):
                results.errors[case] = found["errors"]
        results.backlog = document.get("backlog")
        results.profiles = document.get("profiles") or {}
        legacy = document.get("profile")  # runs before per-goal profiles: one agent_queue drain
        if legacy and not results.profiles:
            results.profiles[f"(a) {legacy.get('case', 'drain')}"] = {
                "rate": legacy.get("rate"), "size": {"jobs": legacy.get("jobs", 0)}, "services": {"agent_queue": legacy},
                "goals": ["the job-queue goals"],
            } if not legacy.get("error") else {"error": legacy["error"]}
        results.rss_peak_mb = document.get("rss_peak_mb") or {}
        return results

    def add(self, figure: str, case: str, metrics: dict[str, float]) -> None:
        self.figure_of[case] = figure
        self.rounds.setdefault(case, []).append(metrics)

    def fail(self, figure: str, case: str, error: str) -> None:
        self.figure_of[case] = figure
        self.rounds.setdefault(case, [])
        self.errors.setdefault(case, []).append(error)

    def metric(self, case: str | None, name: str) -> Spread | None:
        if case is None:
            return None
        return spread(r[name] for r in self.rounds.get(case, []) if name in r)

    def summary(self, case: str) -> dict[str, Spread]:
        names = sorted({k for r in self.rounds.get(case, []) for k in r})
        found = {n: self.metric(case, n) for n in names}
        return {n: s for n, s in found.items() if s is not None}

    def ratio(self, case: str | None, base: str | None, name: str = "rate") -> Spread | None:
        """case/base per round (rounds pair them: same noise), then the spread of those."""
        if case is None or base is None:
            return None
        mine, theirs = self.rounds.get(case, []), self.rounds.get(base, [])
        return spread(a[name] / b[name] for a, b in zip(mine, theirs, strict=False) if name in a and b.get(name))

    def cases(self, figure: str) -> list[str]:
        return [c for c, f in self.figure_of.items() if f == figure]

    def best(self, figure: str, name: str = "rate") -> str | None:
        """The case of `figure` with the highest median (our best strategy)."""
        scored = [(s.median, c) for c in self.cases(figure) if (s := self.metric(c, name)) is not None]
        return max(scored)[1] if scored else None

    def named(self, figure: str, contains: str) -> str | None:
        return next((c for c in self.cases(figure) if contains in c), None)


def goals(results: Results) -> list[Goal]:
    ours = results.best("a")
    ours_50 = ours.replace("1 conversation/job", "50 conversations") if ours else None
    pgq = results.named("c", "asyncpg")
    raw10 = results.best("d")  # the batched floor is the fastest of them
    out = results.best("h")
    # Each job's `job.completed` event is published to delivery, which stores it: the drain's
    # "other services" CPU.
    jobs_run = ProfileRun("a", ours, ("agent_queue", "delivery")) if ours else None
    jobs_50_run = ProfileRun("b", ours_50, ("agent_queue",)) if ours_50 else None
    # Outbound pays messages' MarkMessageDelivery per message too (the outbox's outcome reports).
    out_run = ProfileRun("h", out, ("delivery", "messages")) if out else None
    found: list[Goal] = [
        Goal("Job queue ≥ 1.2× pgqueuer drain (asyncpg)", ">=", 1.2, results.ratio(ours, pgq), "×", f"{ours} / {pgq}",
             jobs_run),
        Goal("Job queue ≥ 0.5× raw-SQL batched ceiling", ">=", 0.5, results.ratio(ours, raw10), "×", f"{ours} / {raw10}",
             jobs_run),
        Goal("≥ 0.8× of that over 50 conversations", ">=", 0.8, results.ratio(ours_50, ours), "×", f"{ours_50} / {ours}",
             jobs_50_run),
        Goal(
            "Total CPU per job ≤ pgqueuer's", ">=", 1.0,
            results.ratio(pgq, ours, "cpu_total_ms_per_1k"), "×",
            "pgqueuer's total CPU per job / ours (client + server + other services + Postgres)", jobs_run,
        ),
        Goal("Outbound queue ≥ 1.2× pgqueuer drain (asyncpg)", ">=", 1.2, results.ratio(out, pgq), "×", f"{out} / {pgq}",
             out_run),
        Goal("Outbound queue ≥ 0.5× raw-SQL batched ceiling", ">=", 0.5, results.ratio(out, raw10), "×",
             f"{out} / {raw10} (the job table's floor: the generic SKIP LOCKED ceiling)", out_run),
    ]
    for figure, name, server in (("g", "EnqueueJob → WatchPendingJobs", "agent_queue"),
                                 ("j", "UpdateStreamingContent → WatchConversation", "messages"),
                                 ("k", "ResolveApproval → WaitForApproval", "approvals")):
        case = results.named(figure, "→")
        found.append(Goal(f"{name} p99 < 10 ms", "<=", LATENCY_LIMIT_MS, results.metric(case, "p99_ms"), "ms",
                          "p99 per round; loopback, shared machine", ProfileRun(figure, case, (server,)) if case else None))
    public, user, service = (results.named("l", f"same work, {m}") for m in ("public", "user", "service"))

    def cpu_view(case: str | None) -> str:
        mine, base = results.metric(case, "server_cpu_ms_per_call"), results.metric(public, "server_cpu_ms_per_call")
        if mine is None or base is None:
            return ""
        return (f"; server CPU per call {mine.median:.2f} ms vs public {base.median:.2f} ms "
                f"(a CPU-bound server would run at {base.median / mine.median:.2f}×)")

    auth_run = ProfileRun("l", AUTH_CASE, ("identity",)) if public else None
    found += [
        Goal("USER RPC with JWT ≥ 0.8× public (same work)", ">=", 0.8, results.ratio(user, public), "×",
             f"calls/s {user} / {public}{cpu_view(user)}", auth_run),
        Goal("SERVICE RPC ≥ 0.9× public (same work)", ">=", 0.9, results.ratio(service, public), "×",
             f"calls/s {service} / {public}{cpu_view(service)}", auth_run),
    ]
    if results.backlog:
        for label, series in results.backlog["series"].items():
            value = flatness(series, "ours")
            sizes = sorted(series, key=int)
            small, large = series[sizes[0]]["ours"], series[sizes[-1]]["ours"]
            found.append(Goal(
                f"Claim cost flat (±20%) as the backlog grows, {label}", "<=", 1.2,
                Spread(value, value, value, 1), "× of the smallest",
                f"fastest of the EXPLAIN ANALYZE runs, worst size / {int(sizes[0]):,} pending "
                f"({int(sizes[0]):,} → {int(sizes[-1]):,}: {small['min_ms']:.2f} → {large['min_ms']:.2f} ms; "
                f"shared buffers {small['buffers']:,.0f} → {large['buffers']:,.0f})",
            ))
    if results.rss_peak_mb:
        name, peak = max(results.rss_peak_mb.items(), key=lambda kv: kv[1])
        found.append(Goal("No service above 150 MB RSS under the drain", "<=", RSS_LIMIT_MB,
                          Spread(peak, peak, peak, 1), "MB", f"largest: {name}"))
    return found


# --- the machine and the versions ---


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions(postgres: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    if postgres:
        found["postgres"] = postgres
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout.strip()
        found["commit"] = commit + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        found["commit"] = "unknown"
    return found


# --- writing ---


def _num(value: float, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text + unit


def _spread(s: Spread | None, unit: str = "") -> str:
    if s is None:
        return "—"
    if s.n == 1:
        return _num(s.median, unit)
    return f"{_num(s.median, unit)} ({_num(s.min)}–{_num(s.max)})"


CASE_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    # figure: (metric, column title, unit)
    "drain": [("rate", "per s", ""), ("cpu_client_ms_per_1k", "client CPU ms/1k", ""),
              ("cpu_server_ms_per_1k", "server CPU ms/1k", ""), ("cpu_other_services_ms_per_1k", "other services ms/1k", ""),
              ("cpu_postgres_ms_per_1k", "Postgres CPU ms/1k", ""), ("cpu_total_ms_per_1k", "total ms/1k", ""),
              ("rss_server_mb", "server RSS MB", "")],
    "latency": [("p50_ms", "p50 ms", ""), ("p99_ms", "p99 ms", ""), ("max_ms", "max ms", ""),
                ("call_p50_ms", "write call p50 ms", ""), ("call_p99_ms", "write call p99 ms", "")],
    "calls": [("rate", "calls/s", ""), ("server_cpu_ms_per_call", "server CPU ms/call", "")],
}
FIGURE_KIND = {"a": "drain", "b": "drain", "c": "drain", "d": "drain", "h": "drain",
               "f": "calls", "l": "calls", "g": "latency", "j": "latency", "k": "latency"}


def _backlogs(options: dict[str, Any]) -> str:
    figures = options.get("figures")
    if figures is not None and "i" not in figures:
        return f"figures {', '.join(sorted(figures))} only (no backlog series)"
    return f"backlog sizes {', '.join(f'{s:,}' for s in options['backlog_sizes'])}"


def markdown(run: dict[str, Any], results: Results, found: list[Goal]) -> str:
    m, v, o = run["machine"], run["versions"], run["options"]
    lines = [
        f"# Bench results {run['started_at']}",
        "",
        f"Measured by `python -m bench{' --quick' if o['quick'] else ''}` on a shared {m['cores']}-core machine "
        f"({m['platform']}); load average at start {', '.join(f'{x:.2f}' for x in run['load_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in m['load_average'])}. Other work on the machine makes every number noisy; "
        "rounds interleave all cases so the noise hits ours and the peers alike. Each cell: median (min–max) over "
        f"{o['rounds']} round(s); ratios are taken per round, then summarized.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Options: {o['jobs']:,} jobs, {o['outbound']:,} outbound messages ({o['per_recipient']} per recipient), "
        f"{o['workers']} workers, claim batch "
        f"{o['claim_batch']}, {o['call_seconds']:g} s per calls/s window, {o['latency_samples']} latency samples per round, "
        f"{_backlogs(o)}. Run took {run['duration_s']:.0f} s.",
        "",
        "## Goals (issue: hot paths at peer speed)",
        "",
        "| goal | measured | bar | verdict | how |",
        "|---|---|---|---|---|",
    ]
    for g in found:
        lines.append(f"| {g.name} | {_spread(g.measured)} {g.unit} | {g.sense} {g.target:g} | {g.verdict} | {g.detail} |")
    lines += ["", "## The issue's table, this run", "", "| path | ours | peer in the same run |", "|---|---|---|"]
    lines += issue_table(results, o)
    lines += ["", "## Figures", ""]
    for figure, title in FIGURES.items():
        if figure in ("e", "i", "rss"):
            continue
        cases = results.cases(figure)
        if not cases:
            continue
        columns = CASE_COLUMNS[FIGURE_KIND[figure]]
        if figure in "cd":
            columns = [c for c in columns if c[0] not in ("cpu_server_ms_per_1k", "cpu_other_services_ms_per_1k", "rss_server_mb")]
        lines += [f"### ({figure}) {title}", "", "| case | " + " | ".join(c[1] for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for case in cases:
            summary = results.summary(case)
            cells = [_spread(summary.get(metric), unit) for metric, _, unit in columns]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
            for error in results.errors.get(case, []):
                lines.append(f"| ↳ failed round | {error} |" + " |" * (len(columns) - 1))
        lines.append("")
    lines += ["### (e) CPU per 1,000 jobs", "",
              "Read off the drains above (client = this process; server = the service under test; other services = "
              "the rest of the stack, e.g. messages answering delivery's outcome reports; Postgres = postmaster and "
              "every backend, exited ones included). pgqueuer and the raw-SQL floor have no server: their client is the whole queue.",
              "", "| drain | client | server | other services | Postgres | total |", "|---|---|---|---|---|---|"]
    for figure in "abcdh":
        for case in results.cases(figure):
            cells = [_spread(results.metric(case, f"cpu_{k}_ms_per_1k")) for k in ("client", "server", "other_services", "postgres", "total")]
            lines.append(f"| ({figure}) {case} | " + " | ".join(cells) + " |")
    lines.append("")
    if results.rss_peak_mb:
        lines += ["### RSS per service under the drains", "", "| service | peak RSS MB |", "|---|---|"]
        lines += [f"| {name} | {mb:.0f} |" for name, mb in sorted(results.rss_peak_mb.items())]
        lines.append("")
    if results.backlog:
        b = results.backlog
        lines += [f"### (i) {FIGURES['i']}", "",
                  f"The service's claim statement (`{b['source']}`, read at run time), `max_jobs` 10, under EXPLAIN "
                  "(ANALYZE, BUFFERS) in a rolled-back transaction; buffers = shared hit + read of the whole statement. "
                  "Raw SQL: the floor's claim (no conversation rule) on the same rows. The outbound series: one "
                  "WhatsApp account's pending messages claimed by `services.delivery.store.outbound.CLAIM` "
                  "(`max_messages` 10, its lease held), beside a raw SKIP LOCKED claim without the per-recipient rule "
                  "(no index serves it: it reads every pending row of the account, which is why it grows).",
                  ""]
        for label, series in b["series"].items():
            lines += [f"**{label}**", "", "| pending | claim ms (min–max) | buffers | raw-SQL claim ms | raw buffers |",
                      "|---|---|---|---|---|"]
            for size in sorted(series, key=int):
                ours, raw = series[size]["ours"], series[size]["raw"]
                lines.append(
                    f"| {int(size):,} | {_num(ours['median_ms'])} ({_num(ours['min_ms'])}–{_num(ours['max_ms'])}) | "
                    f"{ours['buffers']:,.0f} | {_num(raw['median_ms'])} | {raw['buffers']:,.0f} |"
                )
            lines.append("")
        for title, plan in b["plans"].items():
            lines += [f"<details><summary>EXPLAIN (ANALYZE, BUFFERS): {title}</summary>", "", "```", plan, "```", "", "</details>", ""]
    lines += profile_section(results, found)
    return "\n".join(lines) + "\n"


def _profile_tables(summary: dict[str, Any]) -> list[str]:
    lines = ["| library (self time) | % | | library (inclusive) | % |", "|---|---|---|---|---|"]
    own, inclusive = summary["self_by_area"], summary["inclusive_by_area"]
    for i in range(max(len(own), len(inclusive))):
        a = own[i] if i < len(own) else ("", None)
        b = inclusive[i] if i < len(inclusive) else ("", None)
        lines.append(f"| {a[0]} | {_num(a[1]) if a[1] is not None else ''} | | {b[0]} | {_num(b[1]) if b[1] is not None else ''} |")
    lines += ["", "| function (self) | % |", "|---|---|"]
    lines += [f"| `{name}` | {_num(share)} |" for name, share in summary["self_top"]]
    lines += ["", "| function (inclusive) | % |", "|---|---|"]
    lines += [f"| `{name}` | {_num(share)} |" for name, share in summary["inclusive_top"]]
    return [*lines, ""]


STATEMENT_TEXT_CHARS = 160


def _statement_table(statements: list[dict[str, Any]], item: str) -> list[str]:
    lines = [
        f"**Postgres** (pg_stat_statements over the same run: the services' statements that took longest, "
        f"per 1,000 {item}s; time is wall time inside the executor, lock waits and "
        "descheduling included, so it ranks the statements rather than splitting the CPU)",
        "",
        f"| statement | calls per 1k {item}s | exec ms per 1k | plan ms per 1k | plans per call | rows per call | buffers per call |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in statements:
        text = st["query"][:STATEMENT_TEXT_CHARS] + ("…" if len(st["query"]) > STATEMENT_TEXT_CHARS else "")
        text = text.replace("|", "\\|").replace("`", "'")
        lines.append(
            f"| `{text}` | {_num(st['calls_per_1k'])} | {_num(st['exec_ms_per_1k'])} | {_num(st['plan_ms_per_1k'])} "
            f"| {_num(st['plans_per_call'])} | {_num(st['rows_per_call'])} | {_num(st['blocks_per_call'])} |"
        )
    return [*lines, ""]


def profile_section(results: Results, found: list[Goal]) -> list[str]:
    """Every missed goal, the profile of the run that shows where its time goes."""
    missed = [g for g in found if g.missed]
    if not missed and not results.profiles:
        return []
    lines = ["## Where the time goes, per missed goal (py-spy, pg_stat_statements)", "",
             "Each missed goal's case (every goal's with `--profile-all`) ran once more after the rounds with its "
             "servers sampled by py-spy "
             "(idle threads are not sampled, so shares are of each server's busy time; with `--native` C frames "
             "are named, otherwise gRPC's Cython/C core counts as the event loop's time) and, for a drain, "
             "Postgres's statements counted by pg_stat_statements. The claim-flatness goals "
             "are explained by the EXPLAIN plans of figure (i) instead.", "",
             "| missed goal | by | profile |", "|---|---|---|"]
    for g in missed:
        where = g.profile.key if g.profile and g.profile.key in results.profiles else "—"
        lines.append(f"| {g.name} | {g.verdict.removeprefix('missed by ')} | {where} |")
    lines.append("")
    for key, p in results.profiles.items():
        lines += [f"### Profile: {key}", ""]
        if p.get("error"):
            lines += [f"Not recorded: {p['error']}", ""]
            continue
        size = ", ".join(f"{k} {v:,}" for k, v in p.get("size", {}).items())
        lines += [f"{p.get('mode', 'py-spy')} at {p['rate']} Hz during one more run ({size}); "
                  f"goals: {'; '.join(p.get('goals', []))}.", ""]
        for service, summary in p["services"].items():
            if summary.get("error"):
                lines += [f"**{service}**: not recorded: {summary['error']}", ""]
                continue
            lines += [f"**{service}** ({summary['samples']:,} samples)", ""]
            lines += _profile_tables(summary)
        if p.get("statements"):
            lines += _statement_table(p["statements"], "message" if "outbound messages" in p.get("size", {}) else "job")
    return lines


def issue_table(results: Results, o: dict[str, Any]) -> list[str]:
    """The rows of the issue's table, filled from this run (median of the rounds)."""

    def med(case: str | None, metric: str, unit: str = "") -> str:
        s = results.metric(case, metric)
        return _num(s.median, unit) if s else "—"

    ours, pgq_a, pgq_p = results.best("a"), results.named("c", "asyncpg"), results.named("c", "psycopg")
    ours_50 = ours.replace("1 conversation/job", "50 conversations") if ours else None
    raws = sorted(results.cases("d"), key=lambda c: -(results.metric(c, "rate") or Spread(0, 0, 0, 0)).median)
    out = results.best("h")
    cpu = "/".join(med(ours, f"cpu_{k}_ms_per_1k") for k in ("client", "server", "postgres"))
    cpu_pgq = "/".join(med(pgq_a, f"cpu_{k}_ms_per_1k") for k in ("client", "server", "postgres"))
    rows = [
        (f"drain {o['jobs']:,} jobs, {o['workers']} workers, {ours or '—'}", f"{med(ours, 'rate')} jobs/s",
         f"pgqueuer {med(pgq_a, 'rate')} (asyncpg), {med(pgq_p, 'rate')} (psycopg); raw SQL "
         + ", ".join(f"{med(c, 'rate')} ({c.removeprefix('raw SQL ')})" for c in raws)),
        ("same over 50 conversations", f"{med(ours_50, 'rate')} jobs/s", "—"),
        ("CPU per 1,000 jobs: client / server / Postgres", f"{cpu} ms", f"pgqueuer (asyncpg): {cpu_pgq} ms"),
        ("bare Health.Check on the same server (the per-call floor)", f"{med(results.named('f', 'Health'), 'rate')} calls/s", "—"),
    ]
    for figure, label in (("g", "EnqueueJob → job seen by a WatchPendingJobs stream"),):
        case = results.named(figure, "→")
        rows.append((label, f"p50 {med(case, 'p50_ms')} ms, p99 {med(case, 'p99_ms')} ms", "—"))
    rows.append((f"outbound drain: {o['outbound']:,} messages, {o['per_recipient']} per recipient, {out or '—'}",
                 f"{med(out, 'rate')} msgs/s", f"pgqueuer drain {med(pgq_a, 'rate')} (asyncpg)"))
    if results.backlog:
        for label, series in results.backlog["series"].items():
            sizes = sorted(series, key=int)
            first, last = series[sizes[0]], series[sizes[-1]]
            rows.append((
                f"claim statement, {label}, backlog {int(sizes[0]):,} → {int(sizes[-1]):,} (EXPLAIN ANALYZE, fastest run)",
                f"{_num(first['ours']['min_ms'])} → {_num(last['ours']['min_ms'])} ms; "
                f"{first['ours']['buffers']:,.0f} → {last['ours']['buffers']:,.0f} buffers per claim",
                f"raw-SQL claim {_num(first['raw']['min_ms'])} → {_num(last['raw']['min_ms'])} ms",
            ))
    stream = results.named("j", "→")
    rows.append(("UpdateStreamingContent → WatchConversation, 200 ms cadence",
                 f"p50 {med(stream, 'p50_ms')} ms, p99 {med(stream, 'p99_ms')} ms (the update call alone p50 {med(stream, 'call_p50_ms')} ms)", "—"))
    approval = results.named("k", "→")
    rows.append(("ResolveApproval → WaitForApproval wakes", f"p50 {med(approval, 'p50_ms')} ms, p99 {med(approval, 'p99_ms')} ms", "—"))
    public, user, service = (results.named("l", f"same work, {m}") for m in ("public", "user", "service"))
    ratio_user, ratio_service = results.ratio(user, public), results.ratio(service, public)
    rows.append(("user RPC with JWT + cached principal vs a public RPC, same work",
                 f"{_spread(ratio_user, '×')}; service RPC {_spread(ratio_service, '×')}", "—"))
    return [f"| {a} | {b} | {c} |" for a, b, c in rows]


RUN_KEYS = ("started_at", "duration_s", "load_start", "machine", "versions", "options", "errors")


def render(json_path: Path) -> Path:
    """Writes the .md of a .json again (after the report's format changed); returns its path."""
    document = json.loads(json_path.read_text())
    results = Results.from_document(document)
    run = {k: document[k] for k in RUN_KEYS}
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(run, results, goals(results)))
    return md_path


def write(out_dir: Path, run: dict[str, Any], results: Results, found: list[Goal], stem: str | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or datetime.now().strftime("%Y-%m-%d")
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    document = {
        **run,
        "goals": [g.as_dict() for g in found],
        "figures": {
            case: {
                "figure": results.figure_of[case],
                "rounds": results.rounds[case],
                "summary": {k: s.as_dict() for k, s in results.summary(case).items()},
                "errors": results.errors.get(case, []),
            }
            for case in results.rounds
        },
        "backlog": results.backlog,
        "rss_peak_mb": results.rss_peak_mb,
        "profiles": results.profiles,
    }
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    md_path.write_text(markdown(run, results, found))
    return md_path, json_path
