"""GET /todoist/oauth/callback: where Todoist sends the browser after the user decides. The
gateway acts as itself (service key; a redirect carries no user token — the state says whose
flow it is) and hands the callback to the todoist service, which claims the single-use state
and signals its TodoistOAuthWorkflow, then answers how the flow ended (docs/hardening.md #8)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import grpc
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, RedirectResponse, Response

from gateway.deps import AppPeers, AppSettings, ServiceMetadata
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb
from zenthor.logs import get_logger

router = APIRouter(tags=["todoist"])
log = get_logger("gateway.todoist_oauth")

# The exchange is a few Todoist round trips inside a workflow; the service waits up to 25 s for
# it and then says it is still running (services/todoist/peers.py).
CALLBACK_DEADLINE_S = 30.0


def _status_json(status: pb.TodoistConnectionStatus) -> dict[str, Any]:
    body: dict[str, Any] = {"connected": status.connected}
    for field in ("account_email", "account_name", "scope"):
        if status.HasField(field):
            body[field] = getattr(status, field)
    return body


def _back_to_app(return_url: str, **params: str) -> RedirectResponse:
    separator = "&" if "?" in return_url else "?"
    return RedirectResponse(f"{return_url}{separator}{urlencode(params)}", status_code=303)


@router.get(
    "/todoist/oauth/callback",
    summary="Todoist OAuth callback (the redirect URI registered with Todoist)",
    response_model=None,
)
async def todoist_oauth_callback(
    settings: AppSettings,
    peers: AppPeers,
    metadata: ServiceMetadata,
    state: Annotated[str, Query(description="the `todoist_…` state StartTodoistOAuth issued")],
    code: Annotated[str | None, Query(description="Todoist's authorization code")] = None,
    error: Annotated[str | None, Query(description="set by Todoist when the user denied access")] = None,
) -> Response:
    request = pb.SubmitTodoistOAuthCallbackRequest(state=state, code=code, error=error)
    try:
        reply = await peers.todoist().SubmitTodoistOAuthCallback(
            request, metadata=metadata, timeout=CALLBACK_DEADLINE_S
        )
    except grpc.aio.AioRpcError as e:
        if settings.todoist_oauth_return_url is None:
            raise  # the one JSON error body (gateway/errors.py)
        log.info("todoist.callback_failed", grpc_code=e.code().name)
        return _back_to_app(settings.todoist_oauth_return_url, todoist="error", reason=e.code().name)
    if settings.todoist_oauth_return_url is not None:
        outcome = "connected" if reply.status.connected else "denied"
        return _back_to_app(settings.todoist_oauth_return_url, todoist=outcome)
    return JSONResponse(_status_json(reply.status))
