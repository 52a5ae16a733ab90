"""`make dev`'s start-up wait (zenthor/devstack/__main__.py): one deadline for every process, and a
process that died is reported at once, with its exit code and the end of its log, instead of at
the deadline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.ports import ephemeral_floor, free_port, worker_share
from zenthor.devstack.__main__ import Child, Stack, healthy, http_ok
from zenthor.devstack.postgres import LocalPostgres


def _exited_child(tmp_path: Path, name: str, code: int) -> Child:
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait(timeout=60)
    return Child(name, [], {}, tmp_path / f"{name}.log", proc, time.monotonic())


def test_the_wait_for_a_process_that_exited_ends_at_once(tmp_path: Path) -> None:
    child = _exited_child(tmp_path, "identity", 3)
    far = time.monotonic() + 3600  # a wait that ran to this deadline would hit the test's timeout
    assert not healthy(free_port(), far, child)
    assert not http_ok(f"http://127.0.0.1:{free_port()}/healthz", far, child)


def test_a_process_that_exited_is_named_with_its_code_and_a_slow_one_with_the_flag(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port(), free_port(), free_port(), 0, free_port(), startup_timeout_s=7)
    stack.children.append(_exited_child(tmp_path, "identity", 3))
    assert str(stack.not_started("identity", "did not become healthy")) == (
        f"identity exited with 3; see {tmp_path / 'identity.log'}"
    )
    # What it logged before dying is printed too: a CI run keeps only the stack's own output.
    (tmp_path / "identity.log").write_text("".join(f"line {i}\n" for i in range(40)) + "OSError: [Errno 98] Address in use\n")
    message = str(stack.not_started("identity", "did not become healthy"))
    assert message.endswith("  | line 39\n  | OSError: [Errno 98] Address in use")
    assert "line 25" not in message
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stack.children.append(Child("gateway", [], {}, tmp_path / "gateway.log", slow, time.monotonic()))
        message = str(stack.not_started("gateway", "did not answer /healthz"))
        assert message.startswith("gateway did not answer /healthz within 7 s (--startup-timeout")
    finally:
        slow.kill()
        slow.wait(timeout=60)


def test_ports_for_test_processes_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    # A port from the ephemeral range can be taken by any client socket between the pick and
    # the bind (tests/support/ports.py).
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert max(ports) < ephemeral_floor()


def test_each_xdist_worker_picks_ports_from_its_own_share(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two workers checking the same port free at once would both take it (`make test` runs two).
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        shares.append(worker_share(10_000, 24_999))
        low, high = shares[-1]
        assert all(low <= free_port() <= high for _ in range(50))
    assert shares == [(10_000, 17_499), (17_500, 24_999)]


def test_postgres_starts_under_a_data_dir_too_deep_for_a_unix_socket(tmp_path: Path) -> None:
    # A Unix-domain socket's path is limited to 107 bytes, and a pytest-xdist worker's temporary
    # directory under a long TMPDIR is deeper than that: Postgres listens on TCP only.
    pg = LocalPostgres(tmp_path / ("d" * 60) / ("e" * 60) / "data", free_port(), fast_unsafe=True)
    pg.start()
    try:
        with psycopg.connect(pg.admin_dsn(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()
