"""A PostgreSQL server a test may restart, run from a small process of its own.

Starting PostgreSQL means forking with a user change (it refuses to run as root), which a
process already running gRPC threads cannot do safely: the child may crash before exec. This
single-threaded helper does the forking; the test sends it commands on stdin.

    python -m tests.support.postgres_process DATA_DIR PORT
    stdin:  "restart" (fast shutdown, then start on the same port and data) | "stop"
    stdout: "ready" after each start, "stopped" at the end
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from zenthor.devstack.postgres import LocalPostgres

# The test's side of it.
REPO = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 90.0


class RestartablePostgres:
    """The test's handle: `start`, `restart` (like `pg_ctl restart -m fast`: every session is
    ended at once), `stop`. `pg` gives the DSNs."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.pg = LocalPostgres(data_dir, port)
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.postgres_process", str(self.pg.data_dir), str(self.pg.port),
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        await self._expect("ready")

    async def restart(self) -> None:
        await self._send("restart")
        await self._expect("ready")

    async def stop(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        await self._send("stop")
        try:
            await self._expect("stopped")
        finally:
            await asyncio.wait_for(self._proc.wait(), COMMAND_TIMEOUT_S)

    async def _send(self, command: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(f"{command}\n".encode())
        await self._proc.stdin.drain()

    async def _expect(self, word: str) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), COMMAND_TIMEOUT_S)
        assert line.decode().strip() == word, f"postgres helper said {line!r}, expected {word!r}"


def main(data_dir: Path, port: int) -> None:
    pg = LocalPostgres(data_dir, port, fast_unsafe=True)
    pg.start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "restart":
            proc = pg._proc  # the postmaster this helper started
            assert proc is not None
            proc.send_signal(signal.SIGINT)  # fast shutdown: sessions end now, no waiting for clients
            proc.wait(timeout=COMMAND_TIMEOUT_S)
            pg.start()
            print("ready", flush=True)
        else:
            break
    pg.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
