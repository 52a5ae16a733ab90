"""Composition root of the gateway: settings and peers in, a FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from gateway import clerk_webhook, health, todoist_oauth
from gateway.errors import install_error_handlers
from gateway.http_rules import contract_services, http_bindings
from gateway.metrics import HttpMetricsMiddleware
from gateway.request_context import RequestContextMiddleware
from gateway.rest import SseConfig, contract_router
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.logs import get_logger
from zenthor.tracing import flush_tracing, gateway_telemetry

log = get_logger("gateway")

# The hand-written routes; every RPC's REST/SSE route comes from its contract (gateway/rest.py).
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    clerk_webhook.router,
    todoist_oauth.router,
)


def create_app(settings: Settings, peers: Peers | None = None, sse: SseConfig | None = None) -> FastAPI:
    """The gateway app. Peers passed in stay the caller's to close; otherwise the app opens
    its own and closes them on shutdown. Refuses to build (MissingHttpRule, InvalidHttpRule)
    when a contract's HTTP mapping is incomplete or cannot be served."""
    contract_routes, schemas = contract_router(http_bindings(contract_services()), sse or SseConfig())
    owned = peers is None
    app_peers = peers if peers is not None else Peers(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.clerk_webhook_secret is None:
            log.warning("gateway.config", problem="CLERK_WEBHOOK_SECRET is not set: /clerk/webhook answers 503 until it is")
        if settings.service_key is None:
            log.warning("gateway.config", problem="SERVICE_KEY is not set: identity refuses the webhook's calls unless it runs with ZENTHOR_DEV_INSECURE=1")
        yield
        if owned:
            await app_peers.close()
        flush_tracing()  # uvicorn re-raises SIGTERM after this: no atexit runs

    app = FastAPI(
        title="Zenthor gateway",
        summary="REST for the web frontend onto the Zenthor gRPC services, and the Clerk webhook.",
        version="1",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry spans: on only with tracing on (zenthor/tracing.py).
        telemetry=gateway_telemetry(settings),
    )
    app.state.settings = settings
    app.state.peers = app_peers
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    # Added last, so outermost: it counts the 500s the request context writes (gateway/metrics.py).
    app.add_middleware(HttpMetricsMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(contract_routes)
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI's document, plus the proto messages the contract routes' schemas refer to.
        if app.openapi_schema is None:
            document = build_openapi()
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas.schemas)
        assert app.openapi_schema is not None  # FastAPI keeps the document it built
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
