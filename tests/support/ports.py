"""Ports for the processes tests start, picked below the kernel's ephemeral range.

A port found free with bind(0) comes from the ephemeral range and is released at once; until
the process it is meant for binds it (seconds later, after a Temporal or Postgres start), any
client socket on the machine may take it as its local port, or another program's own bind(0)
may get it, and the process then fails at start (CI once lost a dev stack's service that way).
Ports below the ephemeral range are never handed out by the kernel, so only an explicit bind
can take them; this process never hands out one port twice, and checks each is free."""

from __future__ import annotations

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
    while True:
        port = random.randint(LOW, HIGH)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
