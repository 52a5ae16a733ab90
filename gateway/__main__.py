"""`python -m gateway`: the HTTP edge under uvicorn, stopped gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import math

import uvicorn

from gateway.app import create_app
from zenthor.config import Settings
from zenthor.logs import configure_logging
from zenthor.metrics import serve_metrics
from zenthor.tracing import configure_tracing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Zenthor HTTP gateway (REST, Clerk webhook, /healthz, /readyz, /docs). "
        "Configured by environment variables: ZENTHOR_GATEWAY_HOST/PORT, ZENTHOR_IDENTITY_ADDR, "
        "SERVICE_KEY, CLERK_WEBHOOK_SECRET, ZENTHOR_SHUTDOWN_GRACE_S, ZENTHOR_LOG_FORMAT.",
    )
    parser.add_argument("--host", help="listen address (default ZENTHOR_GATEWAY_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default ZENTHOR_GATEWAY_PORT or 8080)")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, service="gateway", trace_ids=settings.tracing_enabled)
    configure_tracing(settings, "gateway")
    config = uvicorn.Config(
        create_app(settings),
        host=args.host or settings.gateway_host,
        port=args.port if args.port is not None else settings.gateway_port,
        lifespan="on",
        # uvicorn's own loggers go through zenthor.logs' root handler (JSON lines with
        # ZENTHOR_LOG_FORMAT=json), not through a logging config of uvicorn's.
        log_config=None,
        log_level=settings.log_level.lower(),
        # RequestContextMiddleware writes the access line, with the request id.
        access_log=False,
        # uvicorn stops accepting on SIGTERM, then waits this long for in-flight requests.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    # GET /metrics on its own port (ZENTHOR_METRICS_PORT), never on the public one.
    metrics = serve_metrics(settings, process="gateway")
    try:
        uvicorn.Server(config).run()
    finally:
        if metrics is not None:
            metrics.close()


if __name__ == "__main__":
    main()
