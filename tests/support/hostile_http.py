"""The gateway in front of the hostile stack, and schemathesis cases against its own OpenAPI
document: every route it serves is covered, with the credentials its RPC's auth mode asks for
(the operation id names the RPC), `Last-Event-ID` garbage on the SSE routes, and Clerk
webhook bodies signed with the real secret so they get past svix to the event checks."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from svix.webhooks import Webhook

from gateway.app import create_app
from tests.support.grpc_client import SERVICE_KEY
from tests.support.hostile_census import Census, Finding, RpcTally
from tests.support.hostile_stack import Credential, HostileStack
from tests.support.hostile_strategies import forged_tokens
from zenthor.auth.modes import AuthMode
from zenthor.config import ServiceName, Settings
from zenthor.interceptors import REQUEST_ID_HEADER

# An operation of the gateway's document (its type parameters are schemathesis internals).
Operation = schemathesis.APIOperation[Any, Any, Any, Any]

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"hostile-hostile-hostile-hostile!").decode()
WEBHOOK_PATH = "/clerk/webhook"
# Generous: a loaded machine must not turn a slow answer into a 503 that looks like a finding.
GATEWAY_RPC_DEADLINE_S = 30.0
HTTP_TIMEOUT_S = (10.0, 60.0)  # connect, read
FIRST_EVENT_MAX_BYTES = 256 * 1024
# Outcomes that are no HTTP status: the client library would not send the request (a header
# with a line break), or the server's HTTP parser closed the connection on it (invalid HTTP).
NOT_SENT = 0
CONNECTION_CLOSED = -1
PARSER_REFUSED = -2
# What uvicorn answers itself, before any app code, to a request that is not valid HTTP (a
# header past h11's size limit): no request id can be on it.
UVICORN_REFUSAL = b"Invalid HTTP request received."
# Last-Event-ID values stay under h11's header size limit (16 KiB), so that they reach the app.
MAX_LAST_EVENT_ID = 8 * 1024
OUTCOME_NAMES = {NOT_SENT: "not sent", CONNECTION_CLOSED: "closed", PARSER_REFUSED: "refused as invalid HTTP"}
# 501 is the honest answer of a contract RPC not built yet; every other 5xx is a finding.
ALLOWED_5XX = frozenset({501})


def gateway_settings(stack: HostileStack) -> Settings:
    return Settings.model_validate(
        {
            **{f"{name.value}_addr": addr for name, addr in stack.addresses.items()},
            "service_key": SERVICE_KEY,
            "clerk_webhook_secret": WEBHOOK_SECRET,
            "rpc_deadline_s": GATEWAY_RPC_DEADLINE_S,
            "log_format": "console",
            "log_level": "CRITICAL",
        }
    )


@asynccontextmanager
async def serve_gateway(stack: HostileStack) -> AsyncIterator[str]:
    """The gateway app under uvicorn on a socket bound here, in this event loop; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(gateway_settings(stack)), lifespan="on", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:  # uvicorn exposes readiness only as this flag
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def openapi_document(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.get("/openapi.json")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


@dataclass(frozen=True)
class HttpCase:
    case: schemathesis.Case  # type: ignore[type-arg]  # its parameters are schemathesis internals
    credential: Credential
    last_event_id: str | None
    signed: bool
    # Query parameters no route declares (they must be ignored or refused, never crash); they
    # also give a route without inputs more than one distinct case.
    extra_query: dict[str, str]


def _rpc_of(operation: Operation) -> str | None:
    """`/pkg.Service/Method` for a contract route (its operation id is `Service.Method`)."""
    operation_id = operation.definition.raw.get("operationId", "")
    service, _, method = operation_id.partition(".")
    for name in ServiceName:
        if name.proto_service == service and method:
            return f"/zenthor.{name.value}.v1.{service}/{method}"
    return None


def is_sse(operation: Operation) -> bool:
    ok = operation.definition.raw.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def _sign(kwargs: dict[str, Any]) -> None:
    """Signs the body as svix would for Clerk, so the event itself is what gets checked."""
    body = kwargs.get("data")
    if body is None and "json" in kwargs:
        body = json.dumps(kwargs.pop("json")).encode()
        kwargs["headers"]["Content-Type"] = "application/json"
    raw = body if isinstance(body, bytes) else str(body or "").encode()
    kwargs["data"] = raw
    delivery = f"msg_{uuid.uuid4().hex}"
    now = int(time.time())
    signature = Webhook(WEBHOOK_SECRET).sign(delivery, datetime.fromtimestamp(now, UTC), raw.decode("utf-8", "replace"))
    kwargs["headers"].update({"svix-id": delivery, "svix-timestamp": str(now), "svix-signature": signature})


@dataclass
class HttpOutcome:
    status: int
    request_id: str | None  # the x-request-id header
    body_request_id: str | None  # error.request_id of a JSON error body
    is_json_error: bool
    sse_error: str | None  # the code of an `error` event in a stream's first bytes


def send_http(session: requests.Session, base_url: str, hostile: HttpCase, request_id: str) -> HttpOutcome:
    headers = dict(hostile.credential.metadata)
    headers[REQUEST_ID_HEADER] = request_id
    if hostile.last_event_id is not None:
        headers["Last-Event-ID"] = hostile.last_event_id
    kwargs = hostile.case.as_transport_kwargs(base_url=base_url, headers=headers)
    # schemathesis' invalid cases drop the bearer token where the security scheme is all they
    # can get wrong; put the case's own credentials back, so they reach validation (the wrong
    # credentials have a family of their own).
    sent = {k: v for k, v in kwargs["headers"].items() if k.lower() not in {h.lower() for h in headers}}
    kwargs["headers"] = {**sent, **headers}
    kwargs["params"] = {**hostile.extra_query, **(kwargs.get("params") or {})}
    if hostile.signed:
        _sign(kwargs)
    try:
        response = session.request(**kwargs, stream=True, timeout=HTTP_TIMEOUT_S, allow_redirects=False)
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
        # The client library refuses to send it (a header with a newline): nothing reached us.
        return HttpOutcome(NOT_SENT, request_id, None, False, None)
    except requests.exceptions.ConnectionError:
        return HttpOutcome(CONNECTION_CLOSED, None, None, False, None)
    try:
        with response:
            return _read(response)
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return HttpOutcome(CONNECTION_CLOSED, None, None, False, None)


def _read(response: requests.Response) -> HttpOutcome:
    content_type = response.headers.get("content-type", "")
    body_request_id = None
    sse_error = None
    is_json_error = False
    if content_type.startswith("text/event-stream"):
        sse_error = _first_event_error(response)
    elif response.status_code >= 400 and content_type.startswith("application/json"):
        is_json_error = True
        try:
            body_request_id = response.json().get("error", {}).get("request_id")
        except (ValueError, AttributeError):
            body_request_id = None
    else:
        content = response.content  # read whole, so the connection is reusable
        if response.status_code == 400 and content.strip() == UVICORN_REFUSAL and REQUEST_ID_HEADER not in response.headers:
            return HttpOutcome(PARSER_REFUSED, None, None, False, None)
    return HttpOutcome(response.status_code, response.headers.get(REQUEST_ID_HEADER), body_request_id, is_json_error, sse_error)


def _first_event_error(response: requests.Response) -> str | None:
    """Reads the stream up to its first event (bounded by size and the read timeout); the
    error code when that event is an `error` event."""
    seen = b""
    for chunk in response.iter_content(chunk_size=None):
        seen += chunk
        if b"\n\n" in seen or b"\r\n\r\n" in seen or len(seen) > FIRST_EVENT_MAX_BYTES:
            break
    first = seen.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    lines = first.split("\n")
    if "event: error" not in lines:
        return None
    data = "".join(line[len("data:"):].strip() for line in lines if line.startswith("data:"))
    try:
        return str(json.loads(data).get("error", {}).get("code", "?"))
    except (ValueError, AttributeError):
        return "?"


@dataclass
class HostileHttpRun:
    stack: HostileStack
    base_url: str
    document: dict[str, Any]
    census: Census
    examples: int
    seed: int | None

    def all_operations(self) -> list[str]:
        schema = schemathesis.openapi.from_dict(self.document)
        labels = []
        with requests.Session() as session:
            for result in schema.get_all_operations():
                operation = result.ok()  # type: ignore[union-attr]  # an invalid document raises here
                labels.append(operation.label)
                self.operation(session, operation)
        return labels

    def credentials(self, operation: Operation) -> tuple[list[Credential], list[Credential]]:
        rpc = _rpc_of(operation)
        if rpc is None or rpc not in self.stack.modes:
            none = self.stack.right[AuthMode.PUBLIC]
            return none, self.stack.wrong[AuthMode.PUBLIC]
        mode = self.stack.modes[rpc]
        return self.stack.right[mode], self.stack.wrong[mode]

    def operation(self, session: requests.Session, operation: Operation) -> None:
        tally = self.census.tally(operation.label)
        right, wrong = self.credentials(operation)
        last_event_ids: st.SearchStrategy[str | None] = (
            st.none() | forged_tokens(self.stack.pool).filter(lambda t: len(t) <= MAX_LAST_EVENT_ID)
            if is_sse(operation)
            else st.none()
        )
        signed = st.booleans() if operation.path == WEBHOOK_PATH else st.just(False)
        extra_query = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=2)

        def cases(mode: GenerationMode, credentials: list[Credential]) -> st.SearchStrategy[HttpCase]:
            return st.builds(
                HttpCase, operation.as_strategy(mode), st.sampled_from(credentials), last_event_ids, signed, extra_query
            )

        families = [
            (0.4, GenerationMode.POSITIVE, right),
            (0.4, GenerationMode.NEGATIVE, right),
            (0.2, GenerationMode.NEGATIVE, wrong),
        ]
        for share, mode, credentials in families:
            count = max(1, int(self.examples * share))
            try:
                self._run(session, cases(mode, credentials), count, tally)
            except Unsatisfiable:
                # No invalid input exists for a route that takes none (GET /healthz): valid
                # ones with stray query parameters stand in for them.
                self._run(session, cases(GenerationMode.POSITIVE, credentials), count, tally)

    def _run(self, session: requests.Session, cases: st.SearchStrategy[HttpCase], count: int, tally: RpcTally) -> None:
        @settings(
            max_examples=count,
            derandomize=self.seed is None,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        @given(hostile=cases)
        def one(hostile: HttpCase) -> None:
            self.one_case(session, hostile, tally)

        (hypothesis_seed(self.seed)(one) if self.seed is not None else one)()

    def one_case(self, session: requests.Session, hostile: HttpCase, tally: RpcTally) -> None:
        tally.cases += 1
        request_id = f"hostile-http-{tally.cases}-{uuid.uuid4().hex[:8]}"
        outcome = send_http(session, self.base_url, hostile, request_id)
        tally.codes[OUTCOME_NAMES.get(outcome.status, str(outcome.status))] += 1
        if outcome.status == NOT_SENT:
            return

        def finding(problem: str) -> Finding:
            sent = f"[{hostile.credential.name}{', signed' if hostile.signed else ''}"
            sent += f", Last-Event-ID {hostile.last_event_id!r:.80}]" if hostile.last_event_id is not None else "]"
            sent += f" {hostile.case.as_curl_command()[:500]}"
            return Finding(tally.rpc, problem, sent, f"HTTP {outcome.status} {outcome.sse_error or ''}", request_id)

        if outcome.status in (CONNECTION_CLOSED, PARSER_REFUSED):
            # Acceptable only as the HTTP parser refusing the request: the gateway still serves.
            if not self.gateway_answers():
                tally.add(finding("5xx"))
            return
        if outcome.status >= 500 and outcome.status not in ALLOWED_5XX:
            tally.add(finding("5xx"))
        if outcome.sse_error is not None and outcome.sse_error in {"INTERNAL", "UNKNOWN", "DATA_LOSS", "?"}:
            tally.add(finding("5xx"))
        if outcome.request_id != request_id or (outcome.is_json_error and outcome.body_request_id != request_id):
            tally.add(finding("NO_REQUEST_ID"))

    def gateway_answers(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/healthz", timeout=HTTP_TIMEOUT_S).status_code == 200
        except requests.exceptions.RequestException:
            return False
