"""What every figure runs on: one embedded PostgreSQL (migrated like the test template), the
services as real processes on real sockets, a local Clerk issuer, and the CPU/RSS probes that
attribute work to the client, each server and Postgres."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.rows import dict_row

from services.agent_queue.store.job_events import EVERYONE
from tests.support.builders import add_user
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from zenthor.config import ServiceName
from zenthor.devstack.postgres import LocalPostgres
from zenthor.migrate import migrate
from zenthor.provision import provision

DATABASE = "bench"
PGQUEUER_DATABASE = "bench_pgqueuer"  # the peer's own tables, on the same server
SERVICE_KEY = "bench-service-key"
NO_TEMPORAL = "127.0.0.1:1"  # nothing listens: no figure starts a retry workflow
USER_EXTERNAL_ID = "user_bench"
# Per-statement totals for the profile runs (Stack.statement_stats): Postgres is about half of a
# job's CPU, and py-spy sees only the Python servers. Loaded for the whole run, so ours and the
# peers pay its small per-statement cost alike.
STATEMENT_STATS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",  # statements inside triggers too (the head hand-over)
    "pg_stat_statements.track_planning": "on",
}
STATEMENTS_SHOWN = 10

# The processes the figures talk to. identity runs as bench/auth_server.py: the shipped server
# with three handlers (none of which a peer calls) given one body, so figure (l) can compare
# auth modes on equal work; principal resolution for the other services is the shipped code.
SERVICES = ("identity", "messages", "agent_queue", "delivery", "approvals")
MODULES = {"identity": "bench.auth_server"}


def service_metadata() -> tuple[tuple[str, str], ...]:
    return (("x-service-key", SERVICE_KEY),)


@dataclass
class ServiceProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20


class Stack:
    """Starts and stops everything; `work_dir` holds Postgres' data and every service's log."""

    def __init__(self, work_dir: Path, say: Callable[[str], None] | None = None) -> None:
        self.work_dir = work_dir
        self.say = say or (lambda _m: None)
        self.pg = LocalPostgres(work_dir / "postgres" / "data", free_port(), fast_unsafe=True, settings=STATEMENT_STATS)
        self.db = TestDatabase(self.pg, DATABASE)
        self.issuer: FakeClerkIssuer | None = None
        self.user_id: uuid.UUID | None = None
        self.services: dict[str, ServiceProcess] = {}
        self._postmaster: psutil.Process | None = None

    # --- lifecycle ---

    def start_database(self) -> None:
        self.pg.start()
        assert self.pg._proc is not None
        self._postmaster = psutil.Process(self.pg._proc.pid)
        self.pg.ensure_database(DATABASE)
        self.pg.ensure_database(PGQUEUER_DATABASE)
        self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        admin = self.db.admin_dsn()
        provision(admin, list(ServiceName))
        for service in ServiceName:
            migrate(service, admin)
        self.user_id = add_user(self.db, USER_EXTERNAL_ID, email="bench@example.com", name="Bench")

    def start_services(self, timeout_s: float = 90.0) -> None:
        self.issuer = FakeClerkIssuer()
        ports = {name: free_port() for name in SERVICES}
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        base = {
            **os.environ,
            "SERVICE_KEY": SERVICE_KEY,
            "CLERK_JWT_ISSUER_DOMAIN": self.issuer.issuer,
            "ZENTHOR_DEV_ISSUER": "1",  # the fake issuer is a local http:// one
            "TEMPORAL_ADDRESS": NO_TEMPORAL,
            "ZENTHOR_LOG_FORMAT": "json",  # as deployed: one JSON access line per call
            "ZENTHOR_GRPC_HOST": "127.0.0.1",
            "ZENTHOR_SHUTDOWN_GRACE_S": "1",
            "PYTHONUNBUFFERED": "1",
            "BENCH_USER_ID": str(self.user_id),
        }
        for service in ServiceName:
            if service.value in ports:
                base[f"ZENTHOR_{service.name}_ADDR"] = f"127.0.0.1:{ports[service.value]}"
        for name in SERVICES:
            env = {**base, "ZENTHOR_DATABASE_URL": self.db.dsn_for(ServiceName(name)), "ZENTHOR_GRPC_PORT": str(ports[name])}
            module = MODULES.get(name, f"services.{name}")
            log_path = logs / f"{name}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.services[name] = ServiceProcess(name, ports[name], proc, log_path)
        asyncio.run(self._wait_healthy(timeout_s))
        self._wait_job_event_listeners(timeout_s)

    def _wait_job_event_listeners(self, timeout_s: float) -> None:
        """Waits for delivery's start-up registration of job-event listeners (migration 0007 of
        agent_queue): until it has run, agent_queue writes every owner's job events, which a
        deployment's queue no longer does once delivery is up."""
        deadline = time.monotonic() + timeout_s
        while self.sql("SELECT 1 FROM agent_queue.job_event_listeners WHERE user_id = %s", (EVERYONE,)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"delivery did not register job-event listeners; see {self.services['delivery'].log_path}")
            time.sleep(0.1)

    async def _wait_healthy(self, timeout_s: float) -> None:
        async def serving(service: ServiceProcess) -> bool:
            # A fresh channel per attempt: a channel that saw "connection refused" backs off
            # its reconnects for seconds, long after the server came up.
            async with grpc.aio.insecure_channel(service.address) as channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        async def one(service: ServiceProcess) -> None:
            deadline = time.monotonic() + timeout_s
            while not await serving(service):
                if service.proc.poll() is not None:
                    tail = service.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service.name} did not become healthy; see {service.log_path}")
                await asyncio.sleep(0.1)

        await asyncio.gather(*(one(s) for s in self.services.values()))

    def stop(self) -> None:
        for service in self.services.values():
            if service.proc.poll() is None:
                service.proc.terminate()
        for service in self.services.values():
            try:
                service.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait()
        if self.issuer is not None:
            self.issuer.close()
        self.pg.stop()

    @contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            self.say(f"starting PostgreSQL (127.0.0.1:{self.pg.port}), migrating every service")
            self.start_database()
            self.say(f"starting {len(SERVICES)} server processes: {', '.join(SERVICES)}")
            started = time.monotonic()
            self.start_services()
            self.say(f"all {len(SERVICES)} servers healthy after {time.monotonic() - started:.1f} s")
            yield self
        finally:
            self.stop()

    # --- addresses and credentials ---

    def address(self, name: str) -> str:
        return self.services[name].address

    def user_metadata(self, expires_in: float = 3600) -> tuple[tuple[str, str], ...]:
        assert self.issuer is not None
        return (("authorization", f"Bearer {self.issuer.token(USER_EXTERNAL_ID, expires_in=expires_in)}"),)

    def admin_dsn(self, database: str = DATABASE) -> str:
        return self.pg.admin_dsn(database)

    def sql(self, query: str, params: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def wait_quiet(self, timeout_s: float = 60.0) -> bool:
        """Waits until no service has an outbox event due (a drain's after-effects, e.g. delivery
        reporting thousands of outcomes to messages, still running): latency cases measure the
        idle stack the goals speak of, not the tail of the case before. Events to a peer the bench
        does not run (Temporal) back off, so they are not due and do not hold this up. False when
        the stack was still busy at `timeout_s`."""
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            schemas = [r[0] for r in conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'"
            ).fetchall()]
            due = " + ".join(
                f"(SELECT count(*) FROM {schema}.outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
                " AND next_attempt_at <= now())"
                for schema in schemas
            )
            deadline = time.monotonic() + timeout_s
            while schemas:
                row = conn.execute(f"SELECT {due}").fetchone()
                if row is None or row[0] == 0:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True

    def reset_statement_stats(self) -> None:
        self.sql("SELECT pg_stat_statements_reset()")

    def statement_stats(self, items: int) -> list[dict[str, Any]]:
        """The services' statements that took the most time since the last reset, with their
        cost per 1,000 items. Execution time is wall time inside the executor: lock
        waits and time the backend was not scheduled count, so it ranks statements rather than
        splitting the CPU."""
        with psycopg.connect(self.admin_dsn(), autocommit=True, row_factory=dict_row) as conn:
            rows = conn.execute(
                """
                SELECT calls, plans, rows, total_exec_time, total_plan_time,
                       shared_blks_hit + shared_blks_read AS blocks, regexp_replace(query, '\\s+', ' ', 'g') AS query
                  FROM pg_stat_statements
                 -- the services' statements: the bench's own probes run as the superuser
                 WHERE userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
                 ORDER BY total_exec_time + total_plan_time DESC
                 LIMIT %s
                """,
                (STATEMENTS_SHOWN,),
            ).fetchall()
        per_1k = 1000 / max(items, 1)
        found = []
        for r in rows:
            calls = max(r["calls"], 1)
            found.append({
                "calls_per_1k": r["calls"] * per_1k,
                "plans_per_call": r["plans"] / calls,
                "rows_per_call": r["rows"] / calls,
                "exec_ms_per_1k": r["total_exec_time"] * per_1k,
                "plan_ms_per_1k": r["total_plan_time"] * per_1k,
                "blocks_per_call": r["blocks"] / calls,
                "query": r["query"],
            })
        return found

    # --- probes ---

    def postgres_cpu_s(self) -> float:
        """The server's CPU so far: the postmaster, its live backends, and (through the
        postmaster's children times) every backend that exited, so short-lived connections
        are not lost between two readings."""
        assert self._postmaster is not None
        own = self._postmaster.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in self._postmaster.children():
            try:
                times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return float(total)

    def postgres_rss_mb(self) -> float:
        assert self._postmaster is not None
        total = self._postmaster.memory_info().rss
        for child in self._postmaster.children():
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return float(total) / 2**20


CLIENT = psutil.Process()


def client_cpu_s() -> float:
    times = CLIENT.cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True)
class CpuReading:
    wall_s: float
    client_s: float
    services_s: dict[str, float]
    postgres_s: float


def read_cpu(stack: Stack) -> CpuReading:
    return CpuReading(
        time.perf_counter(),
        client_cpu_s(),
        {name: s.cpu_s() for name, s in stack.services.items()},
        stack.postgres_cpu_s(),
    )


def cpu_per_1k(before: CpuReading, after: CpuReading, items: int, server: str | None) -> dict[str, float]:
    """CPU milliseconds per 1,000 items, split client / server under test / other services /
    Postgres (other services: the peers the server under test calls, e.g. messages for delivery)."""
    scale = 1000.0 / max(items, 1) * 1000.0
    metrics = {
        "cpu_client_ms_per_1k": (after.client_s - before.client_s) * scale,
        "cpu_postgres_ms_per_1k": (after.postgres_s - before.postgres_s) * scale,
    }
    others = 0.0
    for name, value in after.services_s.items():
        used = value - before.services_s[name]
        if name == server:
            metrics["cpu_server_ms_per_1k"] = used * scale
        else:
            others += used
    metrics["cpu_other_services_ms_per_1k"] = others * scale
    metrics["cpu_total_ms_per_1k"] = sum(
        metrics.get(k, 0.0)
        for k in ("cpu_client_ms_per_1k", "cpu_server_ms_per_1k", "cpu_other_services_ms_per_1k", "cpu_postgres_ms_per_1k")
    )
    return metrics


class RssSampler:
    """Peak RSS of the service processes while a figure runs (sampled every 100 ms)."""

    def __init__(self, stack: Stack, interval_s: float = 0.1) -> None:
        self._stack = stack
        self._interval_s = interval_s
        self.peak_mb: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        for name, service in self._stack.services.items():
            try:
                self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), service.rss_mb())
            except psutil.NoSuchProcess:
                continue

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sample()


class Measurement:
    """One timed interval: wall time, the CPU split per 1,000 items, peak RSS. `start()` and
    `stop()` may be called from inside the work (the first job seen, the last ack) and only
    the first call of each counts. `settled()`, called once the stack is quiet after `stop()`,
    moves the end of the CPU reading (not of the wall time) there: work a drain leaves behind
    (outbox events still being delivered, e.g. delivery's outcome reports to messages) is
    charged to the drain that caused it."""

    def __init__(self, stack: Stack, items: int, server: str | None) -> None:
        self._stack, self._items, self._server = stack, items, server
        self._rss = RssSampler(stack)
        self._before: CpuReading | None = None
        self._after: CpuReading | None = None
        self._settled: CpuReading | None = None

    def start(self) -> None:
        if self._before is None:
            self._rss.start()
            self._before = read_cpu(self._stack)

    def stop(self) -> None:
        if self._before is not None and self._after is None:
            self._after = read_cpu(self._stack)
            self._rss.stop()

    def settled(self) -> None:
        if self._after is not None and self._settled is None:
            self._settled = read_cpu(self._stack)

    @property
    def rss_peak_mb(self) -> dict[str, float]:
        return self._rss.peak_mb

    def metrics(self) -> dict[str, float]:
        if self._before is None or self._after is None:
            raise RuntimeError("the measured interval never started or never ended")
        elapsed = self._after.wall_s - self._before.wall_s
        found = {"rate": self._items / elapsed, "seconds": elapsed}
        found.update(cpu_per_1k(self._before, self._settled or self._after, self._items, self._server))
        if self._server is not None:
            found["rss_server_mb"] = self._rss.peak_mb.get(self._server, 0.0)
        return found
