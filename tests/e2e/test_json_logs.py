"""`python -m gateway` with ZENTHOR_LOG_FORMAT=json writes nothing but JSON lines, uvicorn's own
included; with tracing on, the request's access line carries the trace id the caller sent, and
the console exporter's spans are JSON lines on stdout (zenthor/logs.py, zenthor/tracing.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import httpx

from tests.support.ports import free_port

START_TIMEOUT_S = 60.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def json_lines(output: bytes, stream: str) -> list[dict[str, Any]]:
    """Every line of `output` as a JSON object; fails naming the first line that is not one."""
    parsed: list[dict[str, Any]] = []
    for line in output.decode().splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line on {stream}: {line!r}") from None
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


async def test_every_line_of_the_gateway_process_is_json_and_carries_the_trace_id() -> None:
    port = free_port()
    env = {
        **os.environ,
        "ZENTHOR_GATEWAY_PORT": str(port),
        "ZENTHOR_LOG_FORMAT": "json",
        "ZENTHOR_TRACING": "1",
        "OTEL_TRACES_EXPORTER": "console",
        # Nothing answers there: /readyz reports the services down, /v1/users/me is a 503.
        **{f"ZENTHOR_{name}_ADDR": "127.0.0.1:1" for name in ("IDENTITY", "MESSAGES", "AGENT_QUEUE", "DELIVERY", "APPROVALS", "PLUGINS", "TODOIST")},
        "ZENTHOR_RPC_DEADLINE_S": "0.5",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None and process.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while b"Application startup complete" not in (line := await process.stderr.readline()):
                assert line, f"the gateway exited: {seen.decode()}"
                seen += line
            seen += line
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 200
                await client.get("/readyz")
                response = await client.get("/v1/users/me", headers={"traceparent": TRACEPARENT})
                assert response.status_code in (401, 503), response.text
            process.send_signal(signal.SIGTERM)
            err, out = await asyncio.gather(process.stderr.read(), process.stdout.read())
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    lines = json_lines(seen + err, "stderr")
    loggers = {line.get("logger", "") for line in lines}
    assert {"uvicorn.error"} <= loggers, loggers  # uvicorn's own lines went through our formatter
    assert any(line["event"].startswith("Application shutdown complete") for line in lines)
    assert all({"event", "level", "timestamp", "service"} <= line.keys() for line in lines), lines
    (access,) = [line for line in lines if line["event"] == "http" and line["path"] == "/v1/users/me"]
    assert access["trace_id"] == TRACE_ID  # the caller's trace, continued by the gateway
    assert len(access["span_id"]) == 16
    probes = [line for line in lines if line["event"] == "http" and line["path"] == "/healthz"]
    assert probes and "trace_id" not in probes[0]  # probes are not traced
    # The console exporter: one JSON object per span, on stdout, the request's span among them.
    exported = json_lines(out, "stdout")
    assert any(span["context"]["trace_id"] == f"0x{TRACE_ID}" for span in exported), exported
