"""Every call this service makes outward: Todoist's OAuth and API v1 over one injected
`httpx.AsyncClient` (bounded retries on 429 and 5xx honouring `Retry-After`), conversation
owners from messages and identity over gRPC, the OAuth workflows on Temporal, and the outbox
handler that revokes tokens. Answers come back as domain values or domain errors; no access
token is ever logged (requests are logged by what they do, never by their headers or bodies)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import grpc
import httpx
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from services.todoist.domain import http as http_rules
from services.todoist.domain import oauth as oauth_rules
from services.todoist.domain import tasks as task_rules
from services.todoist.domain.connections import Profile, profile_of
from services.todoist.domain.oauth import Callback, FlowOutcome, TokenGrant
from services.todoist.domain.tasks import TaskPage, TodoistTask
from services.todoist.domain.tokens import TokenCipher
from zenthor import ids
from zenthor.backoff import backoff_delay_s
from zenthor.clients import Peers
from zenthor.errors import DomainError, FailedPrecondition, Unavailable
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.logs import get_logger
from zenthor.outbox import Handler, PermanentDeliveryError
from zenthor.retries import TemporalClientProvider

log = get_logger("todoist.peers")

# One call tries Todoist at most four times: 429 and 5xx (and no answer at all) may pass.
MAX_ATTEMPTS = 4
RETRY_BASE_S = 0.5
RETRY_CAP_S = 8.0
# A longer `Retry-After` is not waited out inside one call: the caller hears
# RESOURCE_EXHAUSTED and retries later (the runtime, or the workflow's activity retries).
MAX_RETRY_AFTER_S = 30.0

Sleep = Callable[[float], Awaitable[None]]


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class TodoistEndpoints:
    api_base_url: str
    token_url: str
    client_id: str | None
    client_secret: str | None = None
    redirect_uri: str | None = None

    def __repr__(self) -> str:  # the client secret stays out of every log and traceback
        return f"TodoistEndpoints(api_base_url={self.api_base_url!r}, token_url={self.token_url!r})"


class TodoistHttpApi:
    """usecases.deps.TodoistApi over HTTP, plus token revocation for the outbox."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoints: TodoistEndpoints,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._endpoints = endpoints
        self._base = endpoints.api_base_url.rstrip("/")
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def _send(self, what: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The final answer after bounded retries of 429, 5xx and transport failures, waiting
        `Retry-After` when Todoist says how long, else the kit's jittered backoff."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self._client.request(method, url, **kwargs)
            except httpx.TransportError as e:
                if attempt == MAX_ATTEMPTS:
                    log.warning("todoist.http_failed", what=what, attempts=attempt, error=type(e).__name__)
                    raise Unavailable(f"Todoist request failed (no answer): {type(e).__name__}") from None
                delay = backoff_delay_s(attempt, self._rng, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)
                log.warning("todoist.http_retry", what=what, attempt=attempt, error=type(e).__name__, retry_in_s=delay)
            else:
                if not http_rules.is_retryable_status(response.status_code) or attempt == MAX_ATTEMPTS:
                    return response
                asked = retry_after_s(response)
                if asked is not None and asked > MAX_RETRY_AFTER_S:
                    return response
                delay = asked if asked is not None else backoff_delay_s(
                    attempt, self._rng, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S
                )
                log.warning(
                    "todoist.http_retry", what=what, attempt=attempt, status=response.status_code, retry_in_s=delay
                )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    async def _api(
        self,
        what: str,
        method: str,
        path: str,
        access_token: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        request_id: str | None = None,
    ) -> Any:
        """The parsed JSON of a 2xx answer (None for 204 or a non-JSON body); any other answer
        is the original's `Todoist request failed (<status>): <body>` as a domain error."""
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        response = await self._send(what, method, self._base + path, headers=headers, json=json, params=params)
        status = response.status_code
        if not 200 <= status < 300:
            log.info("todoist.http_refused", what=what, status=status)
            raise http_rules.error_for_status(status, http_rules.request_failed_message(status, response.text))
        if status == 204 or "application/json" not in response.headers.get("content-type", ""):
            return None
        try:
            return response.json()
        except ValueError:
            raise Unavailable(f"Todoist request failed ({status}): the answer is not JSON") from None

    async def exchange_code(self, code: str) -> TokenGrant:
        data = {
            "client_id": self._endpoints.client_id or "",
            "client_secret": self._endpoints.client_secret or "",
            "code": code,
            "redirect_uri": self._endpoints.redirect_uri or "",
        }
        response = await self._send(
            "exchange_code", "POST", self._endpoints.token_url, data=data, headers={"Accept": "application/json"}
        )
        if not 200 <= response.status_code < 300:
            log.info("todoist.exchange_refused", status=response.status_code)
            raise oauth_rules.exchange_error(response.status_code, response.text)
        try:
            body = response.json()
        except ValueError:
            body = None
        return oauth_rules.token_grant(body)

    async def profile(self, access_token: str) -> Profile | None:
        try:
            return profile_of(await self._api("profile", "GET", "/user", access_token))
        except DomainError as e:
            # The original ignored any failure here: the connection simply has no account fields.
            log.warning("todoist.profile_unavailable", error=e.message)
            return None

    async def create_task(self, access_token: str, body: dict[str, Any], request_id: str) -> TodoistTask:
        data = await self._api("create_task", "POST", "/tasks", access_token, json=body, request_id=request_id)
        return _task(data)

    async def list_tasks(
        self, access_token: str, filter_query: str | None, cursor: str | None, limit: int
    ) -> TaskPage:
        # API v1: active tasks page by `cursor`; a filter query has its own endpoint
        # (docs/hardening.md #9).
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        path = "/tasks"
        if filter_query:
            path, params["query"] = "/tasks/filter", filter_query
        page = task_rules.task_page_of(await self._api("list_tasks", "GET", path, access_token, params=params))
        if page is None:
            raise Unavailable("Todoist request failed (200): the answer is not a page of tasks")
        return page

    async def close_task(self, access_token: str, task_id: str, request_id: str) -> None:
        await self._api("close_task", "POST", task_rules.close_path(task_id), access_token, request_id=request_id)

    async def update_task(
        self, access_token: str, task_id: str, body: dict[str, Any], request_id: str
    ) -> TodoistTask:
        data = await self._api(
            "update_task", "POST", task_rules.task_path(task_id), access_token, json=body, request_id=request_id
        )
        return _task(data)

    async def revoke(self, access_token: str) -> None:
        """Revokes a token (API v1 `access_tokens/revoke`, credentials in the body, never the
        URL). Todoist refusing it (already revoked, unknown) is done too; Todoist down raises,
        so the outbox tries again."""
        body = {
            "client_id": self._endpoints.client_id or "",
            "client_secret": self._endpoints.client_secret or "",
            "access_token": access_token,
        }
        response = await self._send(
            "revoke", "POST", self._base + "/access_tokens/revoke", json=body, headers={"Accept": "application/json"}
        )
        status = response.status_code
        if 200 <= status < 300:
            log.info("todoist.token_revoked")
            return
        if http_rules.is_retryable_status(status):
            raise Unavailable(http_rules.request_failed_message(status, response.text))
        log.warning("todoist.revoke_refused", status=status)


def _task(data: Any) -> TodoistTask:
    task = task_rules.task_of(data)
    if task is None:
        raise Unavailable("Todoist request failed (200): the answer is not a task")
    return task


def token_revoker(api: TodoistHttpApi, cipher: TokenCipher | None) -> Handler:
    """Outbox handler of REVOKE_TOPIC: decrypts the sealed token and revokes it at Todoist."""

    async def revoke(payload: Mapping[str, Any]) -> None:
        if cipher is None:
            raise PermanentDeliveryError("TODOIST_TOKEN_KEY is not set: the token cannot be read to revoke it")
        try:
            token = cipher.decrypt(payload["token_ciphertext"])
        except FailedPrecondition as e:
            raise PermanentDeliveryError(e.message) from None
        await api.revoke(token)

    return revoke


class GrpcConversationOwners:
    """usecases.deps.ConversationOwners: the conversation from messages, its contact from
    identity, each call with a deadline; a peer failing is UNAVAILABLE (retryable)."""

    def __init__(self, peers: Peers, deadline_s: float) -> None:
        self._peers = peers
        self._deadline_s = deadline_s

    async def owner_of(self, conversation_id: uuid.UUID) -> uuid.UUID | None:
        request = messages_pb2.BatchGetConversationsRequest(ids=[ids.CONVERSATION.format(conversation_id)])
        try:
            reply = await self._peers.messages().BatchGetConversations(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"messages service: {e.code().name}") from e
        if not reply.conversations:
            return None
        conversation = reply.conversations[0]
        if conversation.HasField("user_id"):
            return ids.USER.parse(conversation.user_id, "user_id")
        if not conversation.HasField("contact_id"):
            return None
        contacts = identity_pb2.BatchGetContactsRequest(ids=[conversation.contact_id])
        try:
            found = await self._peers.identity().BatchGetContacts(contacts, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"identity service: {e.code().name}") from e
        if not found.contacts or not found.contacts[0].HasField("user_id"):
            return None
        return ids.USER.parse(found.contacts[0].user_id, "user_id")


# Temporal names (services never import workflows/: they use its workflow by name).
OAUTH_WORKFLOW = "TodoistOAuthWorkflow"
OAUTH_SIGNAL = "callback"
# The exchange takes a few Todoist round trips; a caller waits this long for the outcome, then
# hears UNAVAILABLE and sees the result in the connection status.
OAUTH_RESULT_WAIT_S = 25.0


def oauth_workflow_id(state: str) -> str:
    """Readable in the Temporal UI: the state names its flow."""
    return f"todoist-oauth-{state}"


class TemporalOAuthFlows:
    """usecases.deps.OAuthFlows on Temporal."""

    def __init__(self, temporal: TemporalClientProvider, task_queue: str, wait_s: float = OAUTH_RESULT_WAIT_S) -> None:
        self._temporal = temporal
        self._task_queue = task_queue
        self._wait_s = wait_s

    async def _client(self) -> Client:
        try:
            return await self._temporal.get()
        except RuntimeError as e:  # the SDK reports a failed connect as RuntimeError
            raise Unavailable("Temporal is unreachable: the Todoist connection flow cannot run") from e

    async def start(self, state: str, ttl: timedelta) -> None:
        client = await self._client()
        try:
            await client.start_workflow(
                OAUTH_WORKFLOW,
                {"state": state, "ttl_s": ttl.total_seconds()},
                id=oauth_workflow_id(state),
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except RPCError as e:
            raise Unavailable(f"Temporal did not start the Todoist connection flow: {e.status.name}") from e

    async def submit(self, state: str, callback: Callback) -> FlowOutcome:
        client = await self._client()
        handle = client.get_workflow_handle(oauth_workflow_id(state))
        try:
            await handle.signal(OAUTH_SIGNAL, {"code": callback.code, "error": callback.error})
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:  # the flow already ended: its TTL passed
                return FlowOutcome(end="expired")
            raise Unavailable(f"Temporal did not take the Todoist callback: {e.status.name}") from e
        try:
            async with asyncio.timeout(self._wait_s):
                result = await handle.result()
        except TimeoutError:
            raise Unavailable(
                "The Todoist connection is still being completed; the connection status will show it"
            ) from None
        except WorkflowFailureError:
            # Cancelled (a newer flow replaced it) or failed outright: either way it is over.
            return FlowOutcome(end="expired")
        except RPCError as e:
            raise Unavailable(f"Temporal did not answer for the Todoist connection flow: {e.status.name}") from e
        return FlowOutcome(end=result["end"], message=result.get("message", ""), code=result.get("code", ""))

    async def cancel(self, states: Sequence[str]) -> None:
        if not states:
            return
        try:
            client = await self._client()
        except Unavailable:
            return
        for state in states:
            try:
                await client.get_workflow_handle(oauth_workflow_id(state)).cancel()
            except RPCError as e:  # already over: nothing to end
                log.info("todoist.oauth_cancel_skipped", state=state, status=e.status.name)
