"""Where a server's time goes during a drain or a latency series: py-spy samples the process
from outside (no code change) and the stacks are folded into self time per function, inclusive
time per function, and self time per library. Without `native` the server is not paused
(`--nonblocking`) and gRPC's Cython/C core shows as the event loop's time; with it, py-spy
pauses the process per sample (it cannot read C stacks otherwise) and names the C frames."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Library of a frame, by its file's path as py-spy prints it (relative to sys.path: "sqlalchemy/
# engine/base.py", "services/agent_queue/servicer.py"); the first prefix that matches wins.
# gRPC's Cython and C core have no Python frames: their time lands on the event loop's.
AREAS: tuple[tuple[str, str], ...] = (
    ("sqlalchemy/", "SQLAlchemy"),
    ("greenlet", "greenlet"),
    ("psycopg", "psycopg"),
    ("grpc", "grpc (Python part)"),
    ("google/protobuf/", "protobuf"),
    ("protobuf/", "protobuf"),
    ("threading.py", "threads in C code (gRPC poller)"),
    ("json/", "json (access-log lines)"),
    ("structlog/", "logging (structlog)"),
    ("logging/", "logging (structlog)"),
    ("jwt/", "JWT / crypto"),
    ("cryptography/", "JWT / crypto"),
    ("pydantic", "pydantic"),
    ("native", "threads in C code (gRPC poller)"),
    # C frames (py-spy --native): gRPC's Cython layer and core, the interpreter, libc/kernel calls.
    ("src/python/grpcio", "gRPC Cython + C core"),
    ("src/core", "gRPC Cython + C core"),
    ("third_party/", "gRPC Cython + C core"),
    ("cygrpc", "gRPC Cython + C core"),
    ("libgrpc", "gRPC Cython + C core"),
    ("libc.so", "libc / system calls"),
    ("libpthread", "libc / system calls"),
    ("libpq", "libpq"),
    ("Python/", "CPython interpreter"),
    ("Objects/", "CPython interpreter"),
    ("Modules/", "CPython interpreter"),
    ("Include/", "CPython interpreter"),
    ("libpython", "CPython interpreter"),
    ("asyncio/", "asyncio event loop (+ gRPC C core)"),
    ("selectors.py", "asyncio event loop (+ gRPC C core)"),
    ("services/", "service code (services/)"),
    ("zenthor/gen/", "generated stubs"),
    ("zenthor/", "kit (zenthor/)"),
)


# Frames every sample of a server carries (process start, the event loop's run): left out of
# the inclusive table, where they would only say 100%.
SCAFFOLDING = ("<frozen", "asyncio/runners.py", "asyncio/base_events.py", "asyncio/events.py", "zenthor/process.py")


def _scaffolding(file: str) -> bool:
    return file.startswith(SCAFFOLDING) or file.endswith("__main__.py")


NATIVE = "(no Python frame) (native)"


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """`async with Recording(pid, path):` samples `pid` for the duration of the block."""

    def __init__(self, pid: int, path: Path, rate: int = 200, *, native: bool = False) -> None:
        self.pid, self.path, self.rate, self.native = pid, path, rate, native
        self._proc: asyncio.subprocess.Process | None = None
        self.error: str | None = None

    async def __aenter__(self) -> Recording:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not found (it comes with the bench extra)"
            return self
        how = ("--native",) if self.native else ("--nonblocking",)
        self._proc = await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
            *how, "--output", str(self.path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # py-spy attaches before the work starts
        if self._proc.returncode is not None:
            self.error = "py-spy exited at once (no ptrace permission?)"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            _, err = await asyncio.wait_for(self._proc.communicate(), 30)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
            self.error = "py-spy did not stop"
            return
        if not await asyncio.to_thread(_written, self.path):
            self.error = f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _split(frame: str) -> tuple[str, str]:
    """"name (path/to/file.py:123)" → ("name", "path/to/file.py")."""
    name, _, where = frame.rpartition(" (")
    return name, where.rstrip(")").rsplit(":", 1)[0]


def _function(frame: str) -> str:
    name, file = _split(frame)
    return f"{name} ({file})"


def _area(frame: str) -> str:
    file = _split(frame)[1]
    for prefix, area in AREAS:
        if file.startswith(prefix):
            return area
    return "other"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Self/inclusive shares (percent of samples) from py-spy's raw (collapsed) output."""
    total = 0
    self_fn: Counter[str] = Counter()
    inclusive_fn: Counter[str] = Counter()
    self_area: Counter[str] = Counter()
    inclusive_area: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        # A sample with no Python frame at all: a thread busy in C (gRPC's core).
        frames = [f for f in stack.split(";") if f] or [NATIVE]
        total += count
        self_fn[_function(frames[-1])] += count
        self_area[_area(frames[-1])] += count
        for name in {_function(f) for f in frames if not _scaffolding(_split(f)[1])}:
            inclusive_fn[name] += count
        for area in {_area(f) for f in frames if not _scaffolding(_split(f)[1])}:
            inclusive_area[area] += count

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "self_by_area": shares(self_area, len(self_area)),
        "inclusive_by_area": shares(inclusive_area, len(inclusive_area)),
        "self_top": shares(self_fn, top),
        "inclusive_top": shares(inclusive_fn, top),
    }
