"""`make bench` / `python -m bench`: our hot paths and the real peers, side by side, in one run.

Starts one embedded PostgreSQL (migrated like the test template) and the identity, messages,
agent_queue, delivery and approvals servers as their own processes on real sockets, so each
one's CPU and RSS can be read off it (identity runs as bench/auth_server.py: the shipped server
with three handlers given one body for figure l). pgqueuer and a raw-SQL floor run on the same
Postgres. A warm-up round (small sizes, not reported) runs first.

Figures (the issue "Hot paths at peer speed"):
  a  job drain, ClaimJobs(max 10) + CompleteJob per job, each job its own conversation
  b  the same over 50 conversations
  c  pgqueuer drain through its public API, asyncpg and psycopg drivers
  d  raw-SQL floor with psycopg: SKIP LOCKED claim + guarded complete, batch 10 and batch 1
  e  CPU per 1,000 jobs: client / server / other services / Postgres (read off a–d, h)
  f  bare grpc.health.v1 Health.Check calls/s on the agent_queue server (the per-call floor)
  g  EnqueueJob → job seen on WatchPendingJobs, p50/p99
  h  outbound drain: account lease, ClaimOutbound(max 10) + CompleteOutbound per message
  i  claim statement cost (EXPLAIN ANALYZE, BUFFERS) as the backlog grows 10³ → 10⁶, jobs and outbound
  j  UpdateStreamingContent → WatchConversation at a 200 ms cadence, p50/p99
  k  ResolveApproval → WaitForApproval wakes, p50/p99
  l  auth chain: USER (RS256 JWT) and SERVICE RPCs against PUBLIC, on the same handler body
Every case runs once per round; rounds interleave all cases in a rotated order, so noise hits
ours and the peers alike. Each figure is reported as min/median/max over rounds, with the
issue's goals as ratios (met / missed by what factor), in bench/results/<date>.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import bench.acks  # noqa: F401  (registers the batched-ack worker strategies)
from bench.backlog import measure_backlog
from bench.calls import call_cases
from bench.core import Bench, Case, Options
from bench.jobs import install_pgqueuer, job_cases
from bench.live import live_cases
from bench.outbound import outbound_cases
from bench.profile import Recording, summarize
from bench.report import ProfileRun, Results, goals, machine, render, versions, write
from bench.stack import PGQUEUER_DATABASE, Stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MEASURED = frozenset("abcdfghijkl")
PROFILE_RATE_HZ = 200
# Quick runs are too short to sample: a profile run gets at least these sizes.
PROFILE_MIN_JOBS, PROFILE_MIN_OUTBOUND, PROFILE_MIN_SAMPLES, PROFILE_MIN_SECONDS = 1_000, 400, 10, 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 2 rounds, no 10⁵/10⁶ backlog, short profile runs: under 2 minutes on 2 cores")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 2)")
    parser.add_argument("--jobs", type=int, help="jobs per drain, ours and peers (default 10,000; quick 200)")
    parser.add_argument("--outbound", type=int, help="outbound messages per drain (default 5,000; quick 200)")
    parser.add_argument("--per-recipient", type=int, help="outbound messages per recipient (default 10, the issue's 5,000 to 500; quick 2)")
    parser.add_argument("--workers", type=int, default=5, help="concurrent workers in every drain and calls/s window (default 5)")
    parser.add_argument("--batch", type=int, default=10, help="claim batch of ours, pgqueuer and the raw floor (default 10)")
    parser.add_argument("--seconds", type=float, help="length of each calls/s window (default 5; quick 0.5)")
    parser.add_argument("--samples", type=int, help="latency samples per case per round (default 100; quick 10)")
    parser.add_argument("--backlog", type=int, help="largest backlog for figure i, a power of ten (default 10⁶; quick 10⁴)")
    parser.add_argument("--conversations", type=int, default=1000, help="conversations of figure i's second series (default 1,000)")
    parser.add_argument("--only", help="comma-separated figure letters to run, e.g. a,c,d (default: all)")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--profile", dest="profile", action="store_true", default=True,
                         help="after the rounds, run each missed goal's case once more with its servers under py-spy (default)")
    profile.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-all", action="store_true",
                        help="profile every goal's case, the met ones too (where a met goal's time goes)")
    parser.add_argument("--native", action="store_true",
                        help="profiles name C frames (gRPC's core, libc): py-spy pauses the servers per sample and "
                             "counts threads blocked in system calls (pollers, epoll) as busy, so read the inclusive tables")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"where the report goes (default {RESULTS_DIR})")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (Postgres data, server logs, py-spy stacks)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: write the .md of an earlier run's .json again (after a report format change)")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    quick = bool(args.quick)
    largest = args.backlog or (10_000 if quick else 1_000_000)
    sizes = tuple(10**e for e in range(3, len(str(largest))) if 10**e <= largest) or (1_000,)
    figures = MEASURED if not args.only else frozenset(x.strip() for x in args.only.split(",") if x.strip())
    unknown = figures - MEASURED
    if unknown:
        raise SystemExit(f"--only: unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(MEASURED))}")
    return Options(
        quick=quick,
        rounds=args.rounds or (2 if quick else 3),
        jobs=args.jobs or (200 if quick else 10_000),
        outbound=args.outbound or (200 if quick else 5_000),
        per_recipient=args.per_recipient or (2 if quick else 10),
        workers=args.workers,
        claim_batch=args.batch,
        call_seconds=args.seconds or (0.5 if quick else 5.0),
        latency_samples=args.samples or (10 if quick else 100),
        backlog_sizes=sizes,
        backlog_conversations=args.conversations,
        explain_repeats=3 if quick else 5,
        profile=bool(args.profile),
        profile_all=bool(args.profile_all),
        profile_native=bool(args.native),
        figures=figures,
    )


def all_cases(bench: Bench) -> list[Case]:
    found = job_cases(bench) + outbound_cases(bench) + call_cases(bench) + live_cases(bench)
    return [c for c in found if c.figure in bench.options.figures]


def _headline(case: Case, metrics: dict[str, float]) -> str:
    key, unit = case.headline
    value = metrics.get(key)
    return f"{value:,.1f}{unit}" if value is not None else "done"


async def settle(bench: Bench, case: Case, tag: str) -> None:
    if case.quiet and not await asyncio.to_thread(bench.stack.wait_quiet):
        bench.say(f"{tag}: the stack still had outbox events due after 60 s; measuring anyway")


async def run_rounds(bench: Bench, results: Results) -> None:
    cases = all_cases(bench)
    opts = bench.options
    if any(c.figure == "c" for c in cases):
        await install_pgqueuer(bench.stack.admin_dsn(PGQUEUER_DATABASE))
    # Connections, pools, caches and the planner warm up on something that is not reported.
    bench.options = replace(opts, jobs=min(opts.jobs, 50), outbound=min(opts.outbound, 50), call_seconds=0.2,
                            latency_samples=min(opts.latency_samples, 2))
    for case in cases:
        try:
            await case.run(bench)
        except Exception as e:
            bench.say(f"warm-up · ({case.figure}) {case.name}: FAILED {type(e).__name__}: {str(e)[:200]}")
    bench.options = opts
    bench.say(f"warm-up round done ({len(cases)} cases)")
    for r in range(opts.rounds):
        bench.round = r
        shift = r % len(cases) if cases else 0
        for case in cases[shift:] + cases[:shift]:
            tag = f"round {r + 1}/{opts.rounds} · ({case.figure}) {case.name}"
            await settle(bench, case, tag)
            started = time.perf_counter()
            try:
                metrics = await case.run(bench)
            except Exception as e:  # one broken case must not hide the others' numbers
                results.fail(case.figure, case.name, f"{type(e).__name__}: {e}")
                bench.say(f"{tag}: FAILED {type(e).__name__}: {str(e)[:200]}")
                continue
            variants = metrics if case.multi else {case.name: metrics}
            for name, found in variants.items():
                results.add(case.figure, name, found)
            shown = "; ".join(f"{name} {_headline(case, found)}" if case.multi else _headline(case, found)
                              for name, found in variants.items())
            bench.say(f"{tag}: {shown} ({time.perf_counter() - started:.1f} s)")


async def profile_goals(bench: Bench, results: Results, work_dir: Path) -> None:
    """Runs each missed goal's case (every goal's with --profile-all) once more with its servers
    under py-spy (one run serves every goal that names it), so the report shows where that
    goal's time goes."""
    opts = bench.options
    runs: dict[str, tuple[ProfileRun, list[str]]] = {}
    for goal in goals(results):
        if (goal.missed or opts.profile_all) and goal.profile is not None:
            runs.setdefault(goal.profile.key, (goal.profile, []))[1].append(goal.name)
    cases = {(c.figure, c.name): c for c in all_cases(bench)}
    bench.options = replace(
        opts, jobs=max(opts.jobs, PROFILE_MIN_JOBS), outbound=max(opts.outbound, PROFILE_MIN_OUTBOUND),
        latency_samples=max(opts.latency_samples, PROFILE_MIN_SAMPLES), call_seconds=max(opts.call_seconds, PROFILE_MIN_SECONDS),
    )
    sizes = {"a": {"jobs": bench.options.jobs}, "b": {"jobs": bench.options.jobs},
             "h": {"outbound messages": bench.options.outbound}, "l": {"s per calls window": bench.options.call_seconds}}
    samples = {"latency samples": bench.options.latency_samples}
    mode = "py-spy --native" if opts.profile_native else "py-spy --nonblocking"
    try:
        for key, (run, names) in runs.items():
            case = cases.get((run.figure, run.case))
            if case is None:
                continue
            pids = {s: bench.stack.services[s].proc.pid for s in run.services}
            bench.say(f"profile: {key} with {', '.join(f'{s} (pid {pid})' for s, pid in pids.items())} under {mode}")
            await settle(bench, case, f"profile: {key}")
            paths = {s: work_dir / f"pyspy-{run.figure}-{s}.txt" for s in run.services}
            recordings = [Recording(pid, paths[s], PROFILE_RATE_HZ, native=opts.profile_native) for s, pid in pids.items()]
            found: dict[str, Any] = {"rate": PROFILE_RATE_HZ, "mode": mode, "size": sizes.get(run.figure, samples),
                                     "goals": names, "services": {}}
            statements: list[dict[str, Any]] = []
            bench.statements = statements
            bench.recordings = list(recordings)
            try:
                async with nullcontext() if case.windowed else bench.profiled():
                    await case.run(bench)
                if bench.recordings is not None:  # Case.windowed said so, but nothing took them
                    raise RuntimeError(f"{case.name} is marked windowed but timed no window (bench.jobs.measured)")
            except Exception as e:  # a failed profile run must not lose the rounds' numbers
                results.profiles[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                bench.say(f"profile: {key} FAILED {type(e).__name__}: {str(e)[:200]}")
                continue
            finally:
                bench.statements = None
                bench.recordings = None
            if statements:
                found["statements"] = statements
            for (service, path), recording in zip(paths.items(), recordings, strict=True):
                if recording.error is not None:
                    found["services"][service] = {"error": recording.error}
                    continue
                summary = summarize(path)
                found["services"][service] = summary
                top = ", ".join(f"{area} {share:.0f}%" for area, share in summary["self_by_area"][:4])
                bench.say(f"profile: {service}: {summary['samples']:,} samples; self time: {top}")
            results.profiles[key] = found
    finally:
        bench.options = opts


async def run_all(bench: Bench, results: Results, work_dir: Path) -> None:
    await run_rounds(bench, results)
    if "i" in bench.options.figures:
        try:
            results.backlog = await asyncio.to_thread(measure_backlog, bench)
        except Exception as e:
            results.fail("i", "claim statement vs backlog", f"{type(e).__name__}: {e}")
            bench.say(f"(i) FAILED {type(e).__name__}: {e}")
    results.rss_peak_mb = dict(bench.rss_peak_mb)
    if bench.options.profile:
        await profile_goals(bench, results, work_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(f"report: {render(args.render)}")
        return 0
    opts = options(args)
    work_dir = Path(tempfile.mkdtemp(prefix="zenthor-bench-"))
    load_start = os.getloadavg()
    started_at = datetime.now()
    stack = Stack(work_dir)
    bench = Bench(stack, opts)
    stack.say = bench.say
    results = Results()
    bench.say(f"{'quick' if opts.quick else 'full'} run: {opts.rounds} round(s), figures {','.join(sorted(opts.figures))}; "
              f"{os.cpu_count()} cores, load {', '.join(f'{x:.2f}' for x in load_start)}; work dir {work_dir}")
    postgres = None
    try:
        with stack.running():
            postgres = str(stack.sql("SHOW server_version")[0][0])
            asyncio.run(run_all(bench, results, work_dir))
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    found = goals(results)
    run = {
        "started_at": started_at.strftime("%Y-%m-%d %H:%M"),
        "duration_s": time.perf_counter() - bench.started,
        "load_start": list(load_start),
        "machine": machine(),
        "versions": versions(postgres),
        "options": {**opts.__dict__, "figures": sorted(opts.figures), "backlog_sizes": list(opts.backlog_sizes)},
        "errors": results.errors,
    }
    md_path, json_path = write(args.out, run, results, found)
    bench.say("goals:")
    for goal in found:
        measured = f"{goal.measured.median:.3g}" if goal.measured else "—"
        bench.say(f"  {goal.name}: {measured} {goal.unit} (bar {goal.sense} {goal.target:g}) → {goal.verdict}")
    bench.say(f"report: {md_path} and {json_path.name}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
