"""Composition root of the gateway: settings and peers in, a FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from gateway import clerk_webhook, health, routes_identity, routes_messages
from gateway.errors import install_error_handlers
from gateway.request_context import RequestContextMiddleware
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.logs import get_logger

log = get_logger("gateway")

# One router per module; a domain's REST arrives as one `routes_<domain>.py` listed here.
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    clerk_webhook.router,
    routes_identity.router,
    routes_messages.router,
)


def create_app(settings: Settings, peers: Peers | None = None) -> FastAPI:
    """The gateway app. Peers passed in stay the caller's to close; otherwise the app opens
    its own and closes them on shutdown."""
    owned = peers is None
    app_peers = peers if peers is not None else Peers(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.clerk_webhook_secret is None:
            log.warning("gateway.config", problem="CLERK_WEBHOOK_SECRET is not set: /clerk/webhook answers 500")
        if settings.service_key is None:
            log.warning("gateway.config", problem="SERVICE_KEY is not set: identity refuses the webhook's calls unless it runs with ZENTHOR_DEV_INSECURE=1")
        yield
        if owned:
            await app_peers.close()

    app = FastAPI(
        title="Zenthor gateway",
        summary="REST for the web frontend onto the Zenthor gRPC services, and the Clerk webhook.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.peers = app_peers
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    return app
