"""`python -m bench --quick` runs every figure against the real stack and writes a report of
the right shape: every figure measured, every goal turned into a ratio with a verdict, the
machine's cores and load and the versions recorded. Never a timing: the numbers are whatever
this machine gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROUND_FIGURES = ("a", "b", "c", "d", "f", "g", "h", "j", "k", "l")
SERVICES = ("identity", "messages", "agent_queue", "delivery", "approvals")
DRAIN_METRICS = ("rate", "cpu_client_ms_per_1k", "cpu_postgres_ms_per_1k", "cpu_total_ms_per_1k")
GOALS = (
    "Job queue ≥ 1.2× pgqueuer drain (asyncpg)",
    "Job queue ≥ 0.5× raw-SQL batched ceiling",
    "≥ 0.8× of that over 50 conversations",
    "Total CPU per job ≤ pgqueuer's",
    "Outbound queue ≥ 1.2× pgqueuer drain (asyncpg)",
    "Outbound queue ≥ 0.5× raw-SQL batched ceiling",
    "EnqueueJob → WatchPendingJobs p99 < 10 ms",
    "UpdateStreamingContent → WatchConversation p99 < 10 ms",
    "ResolveApproval → WaitForApproval p99 < 10 ms",
    "USER RPC with JWT ≥ 0.8× public (same work)",
    "SERVICE RPC ≥ 0.9× public (same work)",
    "Claim cost flat (±20%) as the backlog grows, 1 conversation/job",
    "Claim cost flat (±20%) as the backlog grows, 1,000 conversations",
    "Claim cost flat (±20%) as the backlog grows, outbound, 1 message/recipient",
    "Claim cost flat (±20%) as the backlog grows, outbound, 1,000 recipients",
    "No service above 150 MB RSS under the drain",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, repo_root_dir: Path) -> tuple[dict[str, Any], str, str]:
    out = tmp_path_factory.mktemp("bench-results")
    run = subprocess.run(
        # Every goal's case profiled, met or missed: the report's profiles are always there.
        [sys.executable, "-m", "bench", "--quick", "--profile-all", "--out", str(out)],
        cwd=repo_root_dir, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, f"bench failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2 and {Path(n).suffix for n in written} == {".md", ".json"}, written
    stem = Path(written[0]).stem
    assert all(Path(n).stem == stem for n in written)
    document = json.loads((out / f"{stem}.json").read_text())
    return document, (out / f"{stem}.md").read_text(), run.stdout


@pytest.fixture(scope="module")
def repo_root_dir() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1000)
def test_every_figure_is_measured_in_every_round(report: tuple[dict[str, Any], str, str]) -> None:
    document, _, _ = report
    rounds = document["options"]["rounds"]
    figures = document["figures"]
    assert document["errors"] == {}
    for figure in ROUND_FIGURES:
        cases = {name: f for name, f in figures.items() if f["figure"] == figure}
        assert cases, f"figure ({figure}) has no case"
        for name, found in cases.items():
            assert len(found["rounds"]) == rounds, f"{name}: {len(found['rounds'])} of {rounds} rounds"
            for metric, spread in found["summary"].items():
                assert spread["min"] <= spread["median"] <= spread["max"], f"{name} {metric}"


@pytest.mark.timeout(1000)
def test_drains_carry_the_cpu_split_and_rss(report: tuple[dict[str, Any], str, str]) -> None:
    document, _, _ = report
    for name, found in document["figures"].items():
        if found["figure"] in ("a", "b", "c", "d", "h"):
            assert set(DRAIN_METRICS) <= set(found["summary"]), name
        if found["figure"] in ("a", "b", "h"):
            assert {"cpu_server_ms_per_1k", "rss_server_mb"} <= set(found["summary"]), name
    assert set(document["rss_peak_mb"]) == set(SERVICES)


@pytest.mark.timeout(1000)
def test_latencies_and_calls_have_their_metrics(report: tuple[dict[str, Any], str, str]) -> None:
    document, _, _ = report
    for found in document["figures"].values():
        if found["figure"] in ("g", "j", "k"):
            assert {"p50_ms", "p99_ms", "call_p50_ms"} <= set(found["summary"])
        if found["figure"] in ("f", "l"):
            assert {"rate", "server_cpu_ms_per_call"} <= set(found["summary"])
    modes = {name for name, f in document["figures"].items() if f["figure"] == "l"}
    assert modes == {"same work, public", "same work, user", "same work, service"}


@pytest.mark.timeout(1000)
def test_backlog_series_explain_the_claim_at_each_size(report: tuple[dict[str, Any], str, str]) -> None:
    document, _, _ = report
    backlog = document["backlog"]
    assert backlog["source"].endswith("CLAIM_JOBS")
    assert set(backlog["series"]) == {
        "1 conversation/job", "1,000 conversations", "outbound, 1 message/recipient", "outbound, 1,000 recipients",
    }
    for series in backlog["series"].values():
        assert sorted(series, key=int) == [str(s) for s in document["options"]["backlog_sizes"]]
        for costs in series.values():
            assert {"ours", "raw"} == set(costs)
            assert costs["ours"]["buffers"] > 0 and costs["ours"]["min_ms"] <= costs["ours"]["max_ms"]
    assert backlog["plans"] and all("Buffers" in plan for plan in backlog["plans"].values())
    # The outbound series EXPLAINs delivery's own claim (its lease check and recipient heads).
    assert any(title.startswith("outbound") and "outbound_messages_claim_idx" in plan for title, plan in backlog["plans"].items())


@pytest.mark.timeout(1000)
def test_a_profiled_drain_shows_the_services_statements_in_postgres(report: tuple[dict[str, Any], str, str]) -> None:
    document, markdown, _ = report
    drains = {key: p for key, p in document["profiles"].items() if key.startswith(("(a)", "(b)", "(h)"))}
    assert {key[:3] for key in drains} == {"(a)", "(b)", "(h)"}, sorted(document["profiles"])
    for key, profile in drains.items():
        statements = profile["statements"]
        assert statements, key
        for st in statements:
            assert {"calls_per_1k", "exec_ms_per_1k", "plan_ms_per_1k", "plans_per_call", "blocks_per_call"} <= set(st)
        # The services' own statements, not the bench's probes (those run as the superuser).
        assert not any("information_schema" in st["query"] for st in statements), key
        schema = "delivery." if key.startswith("(h)") else "agent_queue.jobs"
        assert any(schema in st["query"] for st in statements), key
    assert "**Postgres** (pg_stat_statements" in markdown


@pytest.mark.timeout(1000)
def test_every_goal_has_a_ratio_and_a_verdict(report: tuple[dict[str, Any], str, str]) -> None:
    document, markdown, stdout = report
    goals = {g["name"]: g for g in document["goals"]}
    assert set(GOALS) <= set(goals)
    for name in GOALS:
        goal = goals[name]
        assert goal["factor"] is not None and goal["factor"] > 0, name
        assert goal["met"] is (goal["factor"] >= 1)
        assert goal["verdict"].startswith(("met (", "missed by ")), goal["verdict"]
        assert name in markdown and name in stdout
    assert "## Goals" in markdown
    for figure in (*ROUND_FIGURES, "e", "i"):
        assert f"### ({figure})" in markdown, figure


@pytest.mark.timeout(1000)
def test_the_machine_and_the_versions_are_recorded(report: tuple[dict[str, Any], str, str]) -> None:
    document, markdown, stdout = report
    assert document["machine"]["cores"] >= 1 and len(document["machine"]["load_average"]) == 3
    assert len(document["load_start"]) == 3
    for package in ("pgqueuer", "asyncpg", "grpcio", "sqlalchemy", "psycopg", "postgres"):
        assert document["versions"][package] not in ("", "not installed"), package
    assert "load average" in markdown
    # Progress: one line per step while it runs.
    assert stdout.count("round 1/") >= len(ROUND_FIGURES)
