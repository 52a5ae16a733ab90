"""A local Todoist for `make dev` and the tests: an HTTP server speaking the parts of Todoist's
OAuth and API v1 the todoist service uses, over real sockets.

    GET  /oauth/authorize?client_id&scope&state&redirect_uri   approves at once: 302 to
                                                                redirect_uri?code=…&state=…
    POST /oauth/access_token          form client_id, client_secret, code (single use)
    POST /api/v1/access_tokens/revoke JSON client_id, client_secret, access_token
    GET  /api/v1/user
    GET  /api/v1/tasks                ?cursor&limit     → {results, next_cursor}
    GET  /api/v1/tasks/filter         ?query&cursor&limit (search: …, p1..p4, @label, today)
    POST /api/v1/tasks                JSON task fields; `X-Request-Id` makes a retry one task
    POST /api/v1/tasks/{id}           update (due_string / due_datetime, content, …)
    POST /api/v1/tasks/{id}/close     204

Errors have API v1's shape (`{"error", "error_code", "error_extra", "error_tag", "http_code"}`).
Tests script answers ahead (`script`: a 429 with `Retry-After`, a 500, any body) and read what
was sent (`requests`, raw paths included). `python -m zenthor.devstack.fake_todoist --port N`
runs it with one account and a few tasks, so a newcomer can connect "Todoist" end to end.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import secrets
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from cryptography.fernet import Fernet

# `python -m zenthor.devstack.fake_todoist` listens here by default.
DEV_PORT = 8091
DEV_CLIENT_ID = "zenthor-dev"
DEV_CLIENT_SECRET = "zenthor-dev-secret"
DEFAULT_SCOPE = "data:read_write"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
INBOX_PROJECT_ID = "6Jf8VQXxpwv56VQ7"

_ERROR_CODES = {400: (42, "INVALID_ARGUMENT"), 401: (401, "AUTH_INVALID_TOKEN"), 404: (478, "NOT_FOUND")}


@dataclass
class Account:
    token: str
    email: str
    full_name: str
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    # X-Request-Id → task id of the create it made (Todoist's idempotency).
    creates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    raw_path: str  # as sent, percent-encoding kept
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def segments(self) -> list[str]:
        """The decoded path segments (`/api/v1/tasks/a%2Fb/close` → [api, v1, tasks, a/b, close])."""
        return [unquote(part) for part in self.raw_path.split("/")[1:]]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass(frozen=True)
class ScriptedAnswer:
    status: int
    body: str | Mapping[str, Any] | None
    headers: Mapping[str, str]


def v1_error(status: int, message: str) -> dict[str, Any]:
    code, tag = _ERROR_CODES.get(status, (status, "ERROR"))
    return {"error": message, "error_code": code, "error_extra": {}, "error_tag": tag, "http_code": status}


class FakeTodoist:
    """The fake's state and its server; every method is safe to call from the test's thread."""

    def __init__(
        self,
        *,
        client_id: str = DEV_CLIENT_ID,
        client_secret: str = DEV_CLIENT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        max_page_size: int = MAX_LIMIT,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        # Todoist returns at most this many tasks per page whatever `limit` asks (tests lower
        # it to make one of our pages span several of Todoist's).
        self.max_page_size = max_page_size
        self.accounts: dict[str, Account] = {}
        self.codes: dict[str, str] = {}  # unused code → token
        self.revoked: list[str] = []
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[tuple[str, str], deque[ScriptedAnswer]] = {}
        self._holds: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self.base_url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-todoist", daemon=True)
        self._thread.start()

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/access_token"

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- arranging ---

    def add_account(self, email: str = "dev@todoist.local", full_name: str = "Dev User", token: str | None = None) -> str:
        token = token or f"fake-todoist-token-{secrets.token_hex(16)}"
        with self._lock:
            self.accounts[token] = Account(token=token, email=email, full_name=full_name)
        return token

    def issue_code(self, token: str, code: str | None = None) -> str:
        """A code the token endpoint will exchange (once) for `token`."""
        code = code or secrets.token_urlsafe(12)
        with self._lock:
            self.codes[code] = token
        return code

    def add_task(self, token: str, content: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            task = self._new_task(self.accounts[token], {"content": content, **fields})
        return task

    def script(
        self,
        method: str,
        path: str,
        status: int,
        body: str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answers the next `times` requests to (method, raw path) with this, whatever they ask."""
        with self._lock:
            queue = self._scripts.setdefault((method, path), deque())
            queue.extend(ScriptedAnswer(status, body, headers or {}) for _ in range(times))

    def hold(self, method: str, path: str) -> None:
        """Requests to (method, raw path) wait, once received, until `release` (at most 30 s)."""
        with self._lock:
            self._holds[(method, path)] = threading.Event()

    def release(self, method: str, path: str) -> None:
        with self._lock:
            held = self._holds.pop((method, path), None)
        if held is not None:
            held.set()

    # --- reading ---

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.raw_path == path]

    def active_tasks(self, token: str) -> list[dict[str, Any]]:
        with self._lock:
            account = self.accounts[token]
            return [t for i, t in account.tasks.items() if i not in account.completed]

    # --- serving (called on the server's threads) ---

    def _scripted(self, method: str, path: str) -> ScriptedAnswer | None:
        with self._lock:
            queue = self._scripts.get((method, path))
            return queue.popleft() if queue else None

    def _new_task(self, account: Account, body: Mapping[str, Any]) -> dict[str, Any]:
        task_id = f"6X{next(self._ids):014d}"
        task: dict[str, Any] = {
            "id": task_id,
            "content": body["content"],
            "description": body.get("description", ""),
            "project_id": body.get("project_id") or INBOX_PROJECT_ID,
            "section_id": body.get("section_id"),
            "labels": list(body.get("labels") or []),
            "priority": body.get("priority", 1),
            "due": _due_of(body),
            "url": f"https://app.todoist.com/app/task/{task_id}",
        }
        account.tasks[task_id] = task
        return task

    def handle(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body or text or None, headers) for one request."""
        with self._lock:
            self.requests.append(request)
            held = self._holds.get((request.method, request.raw_path))
        if held is not None:
            held.wait(timeout=30)
        scripted = self._scripted(request.method, request.raw_path)
        if scripted is not None:
            return scripted.status, scripted.body, dict(scripted.headers)
        parts = request.segments
        with self._lock:
            match (request.method, parts):
                case ("GET", ["oauth", "authorize"]):
                    return self._authorize(request)
                case ("POST", ["oauth", "access_token"]):
                    return self._exchange(request.form())
                case ("POST", ["api", "v1", "access_tokens", "revoke"]):
                    return self._revoke(request.json() or {})
                case (_, ["api", "v1", *rest]):
                    account = self._account_of(request)
                    if account is None:
                        return 401, v1_error(401, "Unauthorized"), {}
                    return self._api(account, request, rest)
            return 404, v1_error(404, "Not found"), {}

    def _authorize(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        query = {k: v[0] for k, v in request.query.items()}
        if query.get("client_id") != self.client_id or not query.get("redirect_uri"):
            return 400, "Invalid client_id or redirect_uri", {}
        token = next(iter(self.accounts), None) or self.add_account()
        answer = {"code": self.issue_code(token), "state": query.get("state", "")}
        target = query["redirect_uri"]
        return 302, None, {"Location": f"{target}{'&' if '?' in target else '?'}{urlencode(answer)}"}

    def _exchange(self, form: Mapping[str, str]) -> tuple[int, Any, dict[str, str]]:
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 400, {"error": "invalid_client"}, {}
        token = self.codes.pop(form.get("code", ""), None)
        if token is None:
            return 400, {"error": "invalid_grant"}, {}
        return 200, {"access_token": token, "token_type": "Bearer", "scope": DEFAULT_SCOPE}, {}

    def _revoke(self, body: Mapping[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return 400, {"error": "invalid_client"}, {}
        token = str(body.get("access_token", ""))
        account = self.accounts.get(token)
        if account is not None:
            self.revoked.append(token)
            del self.accounts[token]
        return 204, None, {}

    def _account_of(self, request: RecordedRequest) -> Account | None:
        header = request.headers.get("authorization", "")
        return self.accounts.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None

    def _api(self, account: Account, request: RecordedRequest, rest: list[str]) -> tuple[int, Any, dict[str, str]]:
        query = {k: v[0] for k, v in request.query.items()}
        match (request.method, rest):
            case ("GET", ["user"]):
                return 200, {"id": "2671355", "email": account.email, "full_name": account.full_name}, {}
            case ("GET", ["tasks"]):
                return self._page(account, query, lambda task: True)
            case ("GET", ["tasks", "filter"]):
                matches = _filter_of(query.get("query", ""))
                if matches is None:
                    return 400, v1_error(400, "Invalid filter query"), {}
                return self._page(account, query, matches)
            case ("POST", ["tasks"]):
                body = request.json() or {}
                if not body.get("content"):
                    return 400, v1_error(400, "Argument content is missing"), {}
                key = request.headers.get("x-request-id")
                if key and key in account.creates:
                    return 200, account.tasks[account.creates[key]], {}
                task = self._new_task(account, body)
                if key:
                    account.creates[key] = task["id"]
                return 200, task, {}
            case ("POST", ["tasks", task_id, "close"]):
                if task_id not in account.tasks or task_id in account.completed:
                    return 404, v1_error(404, "Task not found"), {}
                account.completed.add(task_id)
                return 204, None, {}
            case ("POST", ["tasks", task_id]):
                found = account.tasks.get(task_id)
                if found is None or task_id in account.completed:
                    return 404, v1_error(404, "Task not found"), {}
                body = request.json() or {}
                for name in ("content", "description", "labels", "priority"):
                    if name in body:
                        found[name] = body[name]
                if "due_string" in body or "due_datetime" in body:
                    found["due"] = _due_of(body)
                return 200, found, {}
        return 404, v1_error(404, "Not found"), {}

    def _page(self, account: Account, query: Mapping[str, str], matches: Any) -> tuple[int, Any, dict[str, str]]:
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            offset = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if query.get("cursor") else 0
        except ValueError:
            return 400, v1_error(400, "Invalid argument value"), {}
        if not 1 <= limit <= MAX_LIMIT:
            return 400, v1_error(400, "Invalid argument value: limit"), {}
        tasks = [t for i, t in account.tasks.items() if i not in account.completed and matches(t)]
        end = offset + min(limit, self.max_page_size)
        cursor = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(tasks) else None
        return 200, {"results": tasks[offset:end], "next_cursor": cursor}, {}


def _due_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    due_string, due_datetime = body.get("due_string"), body.get("due_datetime")
    if not due_string and not due_datetime:
        return None
    today = datetime.now(UTC).date().isoformat()
    due: dict[str, Any] = {
        "date": str(due_datetime)[:10] if due_datetime else today,
        "string": due_string or str(due_datetime),
        "lang": body.get("due_lang", "en"),
        "is_recurring": False,
    }
    if due_datetime:
        due["datetime"] = due_datetime
    return due


def _filter_of(text: str) -> Any:
    """A tiny subset of Todoist's filter language; None for anything else (Todoist's 400)."""
    text = text.strip()
    if text.lower().startswith("search:"):
        needle = text[len("search:"):].strip().lower()
        return lambda task: needle in str(task.get("content", "")).lower()
    if len(text) == 2 and text[0].lower() == "p" and text[1] in "1234":
        priority = 5 - int(text[1])  # p1 is Todoist's most urgent, priority 4
        return lambda task: task.get("priority") == priority
    if text.startswith("@") and len(text) > 1:
        return lambda task: text[1:] in task.get("labels", [])
    if text.lower() == "today":
        today = datetime.now(UTC).date().isoformat()
        return lambda task: bool(task.get("due")) and task["due"].get("date") == today
    return None


def _handler_for(fake: FakeTodoist) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = RecordedRequest(
                method=self.command,
                raw_path=split.path,
                query=parse_qs(split.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            status, body, headers = fake.handle(request)
            if body is None:
                data, content_type = b"", None
            elif isinstance(body, str):
                data, content_type = body.encode(), "text/plain; charset=utf-8"
            else:
                data, content_type = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:  # no access log: requests carry tokens
            pass

    return Handler


# --- make dev ---


def dev_token_key(data_dir: Path) -> str:
    """TODOIST_TOKEN_KEY for the local stack: generated once into .data/, like the service key."""
    path = data_dir / "dev-todoist-token-key"
    if not path.exists():
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def dev_environment(data_dir: Path, fake_base_url: str, gateway_port: int) -> dict[str, str]:
    """The settings that point the stack at a fake, and Todoist's redirect at the gateway."""
    base = fake_base_url
    return {
        "TODOIST_CLIENT_ID": DEV_CLIENT_ID,
        "TODOIST_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "TODOIST_OAUTH_REDIRECT_URI": f"http://127.0.0.1:{gateway_port}/todoist/oauth/callback",
        "TODOIST_OAUTH_AUTHORIZE_URL": f"{base}/oauth/authorize",
        "TODOIST_OAUTH_TOKEN_URL": f"{base}/oauth/access_token",
        "TODOIST_API_BASE_URL": f"{base}/api/v1",
        "TODOIST_TOKEN_KEY": dev_token_key(data_dir),
    }


def start_dev(port: int = 0) -> FakeTodoist:
    """The fake `make dev` serves from its own process (a free port unless given): one
    account with a few tasks, approved at once by its authorize page."""
    fake = FakeTodoist(port=port)
    for _ in _seeded(fake):
        pass
    return fake


def _seeded(fake: FakeTodoist) -> Iterator[str]:
    token = fake.add_account()
    for content, priority in (("Try Zenthor's Todoist tools", 4), ("Buy milk", 1), ("Call the bank", 2)):
        fake.add_task(token, content, priority=priority)
        yield content


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zenthor.devstack.fake_todoist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEV_PORT)
    parser.add_argument("--client-id", default=DEV_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEV_CLIENT_SECRET)
    args = parser.parse_args(argv)
    fake = FakeTodoist(client_id=args.client_id, client_secret=args.client_secret, port=args.port)
    seeded = list(_seeded(fake))
    print(f"fake Todoist on {fake.base_url} (one account, {len(seeded)} tasks)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
