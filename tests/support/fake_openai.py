"""A local OpenAI-compatible chat endpoint: `POST /v1/chat/completions` with `stream: true`
answers server-sent `chat.completion.chunk` events (a role delta, one delta per piece, a
finish chunk, `data: [DONE]`), as api.openai.com does. Records every request body."""

from __future__ import annotations

import json
from typing import Any

from tests.support.http_fake import JsonHandler, LocalHttpServer


class FakeOpenAI:
    def __init__(self, pieces: list[str], status: int = 200) -> None:
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "authorization": self.headers.get("authorization"), **body})
                if fake.status != 200:
                    self.send_json(fake.status, {"error": {"message": "overloaded", "type": "server_error"}})
                    return
                if self.path != "/v1/chat/completions" or body.get("stream") is not True:
                    self.send_json(400, {"error": {"message": "stream: true on /v1/chat/completions only"}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
                deltas += [{"content": p} for p in fake.pieces]
                for i, delta in enumerate([*deltas, {}]):
                    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"],
                             "choices": [{"index": 0, "delta": delta,
                                          "finish_reason": "stop" if i == len(deltas) else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.pieces = pieces
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self._server = LocalHttpServer(Handler)
        self.base_url = self._server.base_url + "/v1"

    def close(self) -> None:
        self._server.close()
