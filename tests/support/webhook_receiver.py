"""A webhook receiver as an integrator writes one: a local HTTP server that verifies every request
with the standard svix library (`Webhook(secret).verify`) and answers 500 to the first
`fail_first` requests of each event (svix-id), then 204. It records what it saw, and tests wait
for a state of it (each request wakes the waiters), never for a guessed time."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from svix.webhooks import Webhook, WebhookVerificationError

WAIT_S = 60.0


@dataclass(frozen=True)
class Received:
    event_id: str
    verified: bool
    answered: int
    body: dict[str, Any] | None
    headers: dict[str, str]


class WebhookReceiver:
    def __init__(self, *, fail_first: int = 2) -> None:
        self.secret = ""
        self.fail_first = fail_first
        self.requests: list[Received] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer, verified, body = receiver._judge(raw, headers)
                self.send_response(answer)
                self.send_header("content-length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.requests.append(Received(headers.get("svix-id", ""), verified, answer, body, headers))
                    receiver._changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/zenthor"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _judge(self, raw: bytes, headers: dict[str, str]) -> tuple[int, bool, dict[str, Any] | None]:
        try:
            Webhook(self.secret).verify(raw, headers)
        except WebhookVerificationError:
            return 400, False, None
        event_id = headers["svix-id"]
        with self._lock:
            seen = sum(1 for r in self.requests if r.event_id == event_id and r.verified)
        answer = 500 if seen < self.fail_first else 204
        return answer, True, json.loads(raw)

    def accepted(self, event_id: str | None = None) -> list[Received]:
        """Requests answered 2xx (so the sender counts the event as delivered)."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.answered < 300 and (event_id is None or r.event_id == event_id)]

    def seen(self, event_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.event_id == event_id]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        """Returns once `condition()` holds, re-checked after every request received."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(condition, timeout=timeout_s)

        async with asyncio.timeout(timeout_s + 5):
            met = await asyncio.to_thread(wait)
        assert met, f"receiver state not reached within {timeout_s} s: {self.requests}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
