"""The entry point shape of every service process: settings, logs, optional migration, serve
until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Awaitable, Callable

from zenthor.auth.resolver import CachingResolver
from zenthor.clients import IdentityPrincipalResolver, Peers
from zenthor.config import ServiceName, Settings
from zenthor.logs import configure_logging, get_logger
from zenthor.metrics import serve_metrics
from zenthor.server import GrpcServer
from zenthor.tracing import configure_tracing

ServerBuilder = Callable[[Settings], Awaitable[GrpcServer]]


def run_service_process(name: ServiceName, build: ServerBuilder, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name.value}",
        description=f"Zenthor {name.value} gRPC service. Configured by environment variables "
        "(see README: ZENTHOR_DATABASE_URL, ZENTHOR_GRPC_PORT, SERVICE_KEY, CLERK_JWT_ISSUER_DOMAIN, …).",
    )
    parser.add_argument("--port", type=int, help=f"listen port (default ZENTHOR_GRPC_PORT or {name.default_port})")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, service=name.value, trace_ids=settings.tracing_enabled)
    configure_tracing(settings, name.value)
    asyncio.run(_serve(name, build, settings, args.port))


async def _serve(name: ServiceName, build: ServerBuilder, settings: Settings, port: int | None) -> None:
    log = get_logger("zenthor.process")
    if settings.migrate_on_start and settings.database_url:
        from zenthor.migrate import migrate

        await asyncio.to_thread(migrate, name, settings.database_url, as_role=False)
        log.info("migrated", service=name.value)
    server = await build(settings)
    await server.start(port if port is not None else settings.port_for(name))
    # Everything built so far (modules, protobuf descriptors, SQLAlchemy metadata: ~130k objects)
    # lives as long as the process. Frozen out of the collector's reach, it is no longer walked by
    # every full collection, which paused the event loop for 60-250 ms and set the live views'
    # latency tail (README.md, "Performance").
    gc.collect()
    gc.freeze()
    metrics = serve_metrics(settings, process=name.value)  # GET /metrics on its own port, if set
    try:
        await server.serve_until_signalled()
    finally:
        if metrics is not None:
            metrics.close()


def peer_resolver(settings: Settings) -> tuple[CachingResolver, Peers]:
    """The principal resolver of every service but identity: ResolvePrincipal over gRPC, cached
    while the process follows identity's principal changes on its own database connection
    (ZENTHOR_DATABASE_LISTEN_URL, a session; the server starts and stops the listener,
    zenthor.auth.resolver)."""
    peers = Peers(settings)
    resolver = CachingResolver(
        IdentityPrincipalResolver(peers), settings.principal_cache_ttl_s, changes_dsn=settings.listen_url
    )
    return resolver, peers
