"""Ports for the processes tests start, picked below the kernel's ephemeral range.

A port found free with bind(0) comes from the ephemeral range and is released at once; until
the process it is meant for binds it (seconds later, after a Temporal or Postgres start), any
client socket on the machine may take it as its local port, or another program's own bind(0)
may get it, and the process then fails at start (CI once lost a dev stack's service that way).
Ports below the ephemeral range are never handed out by the kernel, so only an explicit bind
can take them; this process never hands out one port twice, and checks each is free. Under
pytest-xdist (`make test` runs two workers) each worker picks from its own share of every
range, so two workers never race for one port between its check and its bind."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

# Below the ports dev stacks in tests use (tests/support/devstack.py: 25051 to 32160).
LOW, HIGH = 10_000, 24_999
_handed_out: set[int] = set()


def ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def worker_share(low: int, high: int) -> tuple[int, int]:
    """This test process's slice of [low, high]: all of it outside pytest-xdist."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    width = (high - low + 1) // workers
    return low + worker * width, low + (worker + 1) * width - 1


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing is bound to now, that no client socket can take meanwhile."""
    if ephemeral_floor() <= HIGH:
        # An unusual kernel range overlaps ours: fall back to the kernel's pick.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    low, high = worker_share(LOW, HIGH)
    while True:
        port = random.randint(low, high)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
