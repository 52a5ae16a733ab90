"""The worker's liveness (`python -m workflows --alive`): the running worker touches a file from
its event loop; a fresh mtime proves the process is alive and its loop turns, whether or not
Temporal answers. A Temporal outage must never restart workers (readiness, `--check`, reports
it). Kept free of Temporal imports so the probe's interpreter starts fast.
/tmp is the pod's one writable mount (deploy/k8s/base/patches/pod-hardening.yaml)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

HEARTBEAT_FILE = Path(os.environ.get("ZENTHOR_WORKER_HEARTBEAT_FILE", "/tmp/zenthor-worker.alive"))
HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_STALE_S = 60.0


def _beat(path: Path) -> None:
    path.touch()  # an mtime update on the pod's tmpfs: too small to move off the loop


def _stop_beating(path: Path) -> None:
    path.unlink(missing_ok=True)


async def heartbeat(stop: asyncio.Event, path: Path = HEARTBEAT_FILE) -> None:
    """Touches `path` every HEARTBEAT_EVERY_S until `stop`; removes it on the way out."""
    try:
        while not stop.is_set():
            _beat(path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_EVERY_S)
    finally:
        _stop_beating(path)


def alive(path: Path = HEARTBEAT_FILE, stale_s: float = HEARTBEAT_STALE_S) -> bool:
    """Liveness: the worker's heartbeat is fresh. Asks nothing of Temporal."""
    try:
        return time.time() - path.stat().st_mtime < stale_s
    except FileNotFoundError:
        return False
