"""The test process's tracer provider, set up once as a traced process sets up its own
(zenthor.tracing.configure_tracing), keeping spans in memory; and reading them back. Import `exporter_fixture` and `spans_fixture` into a test module to
use the fixtures `exporter` and `spans`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zenthor.config import Settings
from zenthor.tracing import configure_tracing


@pytest.fixture(name="exporter", scope="session")
def exporter_fixture() -> InMemorySpanExporter:
    """Once per session: OpenTelemetry's global provider cannot be replaced."""
    spans = InMemorySpanExporter()
    assert configure_tracing(Settings(tracing=True), "tests", exporter=spans)
    return spans


@pytest.fixture(name="spans")
def spans_fixture(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


def server_span(spans: InMemorySpanExporter, method: str) -> ReadableSpan | None:
    for span in spans.get_finished_spans():
        if span.name == method and span.kind == trace.SpanKind.SERVER:
            return span
    return None


def ancestry(span: ReadableSpan, spans: InMemorySpanExporter) -> list[ReadableSpan]:
    """`span` and its recorded ancestors, nearest first."""
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    chain = [span]
    while (parent := chain[-1].parent) is not None and parent.span_id in by_id:
        chain.append(by_id[parent.span_id])
    return chain
