"""The stack exactly as `make dev` starts it (`python -m zenthor.devstack`), on free ports and a
temporary data dir, for tests that need every process of the stack at once."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.ports import free_port, worker_share
from zenthor.config import ServiceName
from zenthor.devstack.__main__ import READY_LINE, STARTUP_TIMEOUT_S, offset_ports

ROOT = Path(__file__).resolve().parents[2]
# The stack's own health deadline, plus PostgreSQL, the migrations and Temporal before it: the
# stack reports a slow start itself (naming the process) rather than this wait expiring.
START_TIMEOUT_S = STARTUP_TIMEOUT_S + 120.0


def _as_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
COMMAND_TIMEOUT_S = 60.0
OWN_VARIABLES = frozenset({"SERVICE_KEY", "AGENT_SECRET", "ADMIN_EMAIL_ALLOWLIST", "CLERK_WEBHOOK_SECRET",
                           "ZENTHOR_DEV_DATA_DIR", "CLERK_JWT_ISSUER_DOMAIN", "ZENTHOR_DEV_ISSUER"})


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_offset() -> int:
    while True:
        # Every moved port (gRPC 50051…, metrics 50151…) lands below the kernel's ephemeral range
        # (32768+), so neither a client socket nor another program's free-port pick takes it meanwhile.
        offset = random.randint(*worker_share(-25_000, -18_100))
        if not any(port_open(port) for port in offset_ports(offset).values()):
            return offset


@dataclass
class DevStack:
    data_dir: Path
    ports: dict[str, int] = field(
        default_factory=lambda: {k: free_port() for k in ("pg", "temporal", "ui", "gateway", "issuer")}
    )
    offset: int = field(default_factory=free_offset)
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def grpc_address(self, service: ServiceName) -> str:
        return f"127.0.0.1:{service.default_port + self.offset}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def service_key(self) -> str:
        return (self.data_dir / "dev-service-key").read_text().strip()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def env(self) -> dict[str, str]:
        """The caller's environment without what would make this stack differ from a fresh
        `make dev` (its own key, allowlist, webhook secret, data dir)."""
        return {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}

    def start(self, *extra_args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zenthor.devstack", "--data-dir", str(self.data_dir),
             "--pg-port", str(self.ports["pg"]), "--temporal-port", str(self.ports["temporal"]),
             "--temporal-ui-port", str(self.ports["ui"]), "--gateway-port", str(self.ports["gateway"]),
             "--issuer-port", str(self.ports["issuer"]), "--port-offset", str(self.offset), *extra_args],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # As `make dev &` or a CI step starts it: a background job of a non-interactive shell
            # inherits SIGINT ignored, and Ctrl-C (`stop`) must still end it.
            preexec_fn=_as_a_background_job,
        )
        # Drained all along: a full pipe would block the stack's own prints.
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_for_output(READY_LINE, START_TIMEOUT_S)

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            assert self.proc is not None
            assert self.proc.poll() is None or text in self.output, f"stack exited:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n{self.output}"
            time.sleep(0.1)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m zenthor.devstack <args>` against this stack, as a person runs it."""
        return subprocess.run(
            [sys.executable, "-m", "zenthor.devstack", *args], cwd=ROOT, capture_output=True, text=True,
            env={**self.env, "ZENTHOR_DEV_DATA_DIR": str(self.data_dir)}, timeout=COMMAND_TIMEOUT_S,
        )

    def token(self, email: str, *, admin: bool = False) -> str:
        result = self.command("token", "--email", email, *(["--admin"] if admin else []))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def children(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child_running(self, module: str) -> psutil.Process:
        """The stack's process started as `python -m <module>`."""
        for child in self.children():
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if "-m" in cmdline and module in cmdline:
                return child
        raise LookupError(module)

    def stop(self, timeout_s: float = 90) -> int:
        """Ctrl-C, as a person would; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
