"""Stopping always ends: a server whose stop step hangs still stops and closes everything after
that step (zenthor.shutdown), a background task that swallows its cancellation does not hold
stopping up, and a test run whose teardown hangs anyway is ended by the backstop behind
pytest-timeout (tests/support/pytest_plugin.py) instead of stalling."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from services.messages.app import build_server as build_messages
from tests.service.conftest import start, stop
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.service_process import NOBODY, REPO
from tests.support.waiting import eventually
from zenthor import shutdown
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc


def connections_of(db: TestDatabase, role: str) -> int:
    [(count,)] = db.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = %s", (role,)
    )
    return int(count)


async def test_a_server_whose_stop_step_hangs_still_stops_and_closes_what_follows(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short for the step that hangs, yet long enough for every other step on a busy machine: a
    # step that overran would leave its connection open and fail the check below.
    monkeypatch.setattr(shutdown, "STEP_TIMEOUT_S", 3.0)
    settings = settings_for(ServiceName.MESSAGES, agent_queue_addr=NOBODY)
    messages = await start(await build_messages(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    assert connections_of(db, ServiceName.MESSAGES.db_role) >= 1  # the LISTEN connection at least

    async def hangs() -> None:
        await asyncio.Event().wait()

    messages.server.on_stop.insert(0, hangs)  # before the relay, the change feed and the pool
    await asyncio.wait_for(stop(messages), 60)
    # Every connection was closed; Postgres lists a backend until it has seen its client go,
    # which a busy machine delays: wait for that state (a leaked connection never reaches it).
    await eventually(lambda: connections_of(db, ServiceName.MESSAGES.db_role) == 0)


async def test_a_task_that_swallows_its_cancellation_does_not_hold_stopping_up() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # keeps running after its cancellation, until released

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)  # let it start
    await asyncio.wait_for(shutdown.cancel_and_wait([task], what="test", timeout_s=0.2), 10)
    assert not task.done()
    release.set()
    await asyncio.wait_for(task, 10)


HANGING_TEARDOWN = '''
import asyncio
import subprocess

import pytest

import tests.support.pytest_plugin as plugin

plugin.BACKSTOP_GRACE_S = 2.0


@pytest.fixture
async def stuck():
    child = subprocess.Popen(["sleep", "300"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))

    async def swallows_cancellation():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    asyncio.create_task(swallows_cancellation())
    yield
    await asyncio.Event().wait()  # a teardown that never ends


async def test_hangs_in_teardown(stuck):
    pass


def test_never_reached():
    pass
'''


def test_the_backstop_ends_a_run_whose_teardown_hangs_past_pytest_timeout(tmp_path: Path) -> None:
    # pytest-timeout fires in the teardown; pytest-asyncio then waits for the task that
    # swallows cancellations, with no timer left. The backstop ends the run.
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(HANGING_TEARDOWN))
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.support.pytest_plugin",
            "-o", "timeout=2", "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
            "test_inner.py",
        ],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "still running" in run.stderr and "_cancel_all_tasks" in run.stderr, run.stderr
    child = int((tmp_path / "child.pid").read_text())
    assert not _alive(child), "the backstop left the test's child process running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a killed child not yet reaped is a zombie
    except FileNotFoundError:
        return False
