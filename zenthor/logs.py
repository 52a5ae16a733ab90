"""Structured logs: JSON lines (or console in dev) carrying the request id of the current call,
and the trace and span ids when tracing is on (zenthor/tracing.py).

Our own lines go through structlog. Libraries log through the standard library (uvicorn's server
and access loggers, the Temporal SDK's `temporalio.*`, gRPC's, warnings); their records are
rendered by the same processors through structlog's ProcessorFormatter on one root handler, so
with ZENTHOR_LOG_FORMAT=json every line a process writes is one JSON object. The standard
library's loggers print WARNING and above, uvicorn's and Temporal's from ZENTHOR_LOG_LEVEL.
Temporal's Core (Rust) writes its own plain lines unless told to hand them to Python:
`forward_temporal_core_logs` does, before a process's first Temporal client.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

import structlog

if TYPE_CHECKING:
    from temporalio.runtime import LoggingConfig

# Library loggers printed at the configured level (the rest from WARNING on).
VERBOSE_LIBRARY_LOGGERS = ("uvicorn", "temporalio")
# Where the Temporal SDK's Core writes once forwarded (zenthor.logs.forward_temporal_core_logs).
TEMPORAL_CORE_LOGGER = "temporalio.core"

_json_lines = False
_core_forwarded = False


def configure_logging(
    level: str = "INFO", fmt: str = "json", service: str | None = None, *, trace_ids: bool = False
) -> None:
    global _json_lines
    _json_lines = fmt == "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(1, _add_service(service))
    if trace_ids:
        shared.append(add_trace_ids)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(level, shared, renderer)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record (as structlog's own lines
    do), so a test runner that swaps it per test still captures library lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _route_standard_logging(
    level: str, shared: list[structlog.types.Processor], renderer: structlog.types.Processor
) -> None:
    handler = _StderrHandler()
    handler.set_name("zenthor")
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == "zenthor"]:
        root.removeHandler(existing)
    root.addHandler(handler)
    configured = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    root.setLevel(max(configured, logging.WARNING))
    for name in VERBOSE_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(configured)
    # warnings.warn → the "py.warnings" logger, so they are JSON lines too.
    logging.captureWarnings(_json_lines)


def add_trace_ids(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """`trace_id` and `span_id` of the span the line is written in (none outside a span)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def temporal_logging_config() -> LoggingConfig:
    """How the Temporal SDK's Core should log in this process: with JSON logs, handed to the
    `temporalio.core` Python logger (so rendered by the root handler above), else Core's own
    console output. Every `Runtime` a process builds takes it (workflows/metrics.py too)."""
    from temporalio.runtime import LogForwardingConfig, LoggingConfig

    if not _json_lines:
        return LoggingConfig.default
    return LoggingConfig(
        filter=LoggingConfig.default.filter,
        forwarding=LogForwardingConfig(logger=logging.getLogger(TEMPORAL_CORE_LOGGER)),
    )


def forward_temporal_core_logs() -> None:
    """With JSON logs, makes the SDK's default runtime forward Core's lines (above) instead of
    writing plain text. Call it before the process's first Temporal client: a client keeps the
    runtime it was built on. Once per process; a no-op with console logs."""
    global _core_forwarded
    if not _json_lines or _core_forwarded:
        return
    from temporalio.runtime import Runtime, TelemetryConfig

    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=temporal_logging_config())), error_if_already_set=False)
    _core_forwarded = True


def _add_service(service: str) -> structlog.types.Processor:
    def processor(
        _logger: object, _name: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("service", service)
        return event

    return processor


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
