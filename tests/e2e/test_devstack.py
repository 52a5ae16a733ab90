"""`make dev` end to end: the stack starts from an empty data dir, every process answers its
health check, the Temporal UI is up, and Ctrl-C stops everything with no stray process."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import free_port
from zenthor.config import ServiceName
from zenthor.devstack.__main__ import READY_LINE

ROOT = Path(__file__).resolve().parents[2]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_offset() -> int:
    while True:
        # Below the kernel's ephemeral range (32768+), so no client socket can take them meanwhile.
        offset = random.randint(-25_000, -18_000)
        if not any(port_open(s.default_port + offset) for s in ServiceName):
            return offset


def test_make_dev_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {"pg": free_port(), "temporal": free_port(), "ui": free_port(), "gateway": free_port()}
    offset = free_offset()
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenthor.devstack", "--data-dir", str(tmp_path / "data"),
         "--pg-port", str(ports["pg"]), "--temporal-port", str(ports["temporal"]),
         "--temporal-ui-port", str(ports["ui"]), "--gateway-port", str(ports["gateway"]),
         "--port-offset", str(offset)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while READY_LINE not in "".join(output):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(output)
            output.append(line)
            assert time.monotonic() < deadline, "".join(output)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 11, children  # postgres, temporal, 7 services, gateway, worker

        key = (tmp_path / "data" / "dev-service-key").read_text().strip()
        for service in ServiceName:
            with grpc.insecure_channel(f"127.0.0.1:{service.default_port + offset}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        assert httpx.get(f"http://127.0.0.1:{ports['gateway']}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=10).status_code == 200
        # The stack is never open: service calls need the generated key.
        from zenthor.gen.zenthor.identity.v1 import identity_pb2, identity_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{ServiceName.IDENTITY.default_port + offset}") as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            request = identity_pb2.GetContactByPhoneRequest(phone="5511999990000")
            try:
                stub.GetContactByPhone(request, timeout=5)
                raise AssertionError("service call without key succeeded")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            assert not stub.GetContactByPhone(request, metadata=(("x-service-key", key),), timeout=5).HasField("contact")

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        output.append(rest)
        assert proc.returncode == 0, "".join(output)
        assert "[dev] stopped" in rest
        psutil.wait_procs(children, timeout=10)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not any(port_open(p) for p in ports.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
