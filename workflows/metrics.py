"""The worker's metrics, served on its ZENTHOR_METRICS_PORT with the process metrics
(zenthor/metrics.py): whether its Temporal worker runs, and the Temporal SDK's own metrics
(workflow and activity completions, failures, latencies, task slots, …).

The SDK exports its metrics only through its Rust core's Prometheus exporter, which binds its
own address. The worker binds it on a free loopback port nobody scrapes, and /metrics relays it:
each scrape reads that exporter once and adds its series (prefix `temporal_`) to the answer, so
a pod has one metrics port like every other."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

from prometheus_client import REGISTRY, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from zenthor.config import Settings
from zenthor.logs import get_logger, temporal_logging_config

log = get_logger("workflows.metrics")

WORKER_RUNNING = Gauge(
    "zenthor_worker_running",
    "1 while the Temporal worker runs (it connected, upserted the schedules and polls its task "
    "queue), 0 while it waits for Temporal or stops.",
)

# A scrape waits at most this long for the SDK's exporter (it answers from memory, on loopback).
RELAY_TIMEOUT_S = 2.0


class TemporalSdkMetrics:
    """A collector that relays the SDK exporter's series into this process's /metrics."""

    def __init__(self, url: str) -> None:
        self.url = url

    def describe(self) -> list[Metric]:
        # Nothing to declare: the registry then neither checks names nor scrapes at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=RELAY_TIMEOUT_S) as response:
                text = response.read().decode()
        except OSError as e:  # the exporter is not up yet, or stopped: this scrape goes without
            log.warning("metrics.temporal_unreadable", url=self.url, error=str(e))
            return
        yield from text_string_to_metric_families(text)


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_temporal_metrics(settings: Settings) -> Runtime | None:
    """With metrics on, makes the SDK's default runtime one that exports its metrics, relayed by
    /metrics; call it before any Temporal client is made. None (and no change) with metrics off."""
    if settings.metrics_port is None:
        return None
    url = f"127.0.0.1:{_free_loopback_port()}"
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=url, counters_total_suffix=True, durations_as_seconds=True),
            # Core's log lines as the rest of the process's (JSON when configured, zenthor/logs.py).
            logging=temporal_logging_config(),
        )
    )
    Runtime.set_default(runtime, error_if_already_set=False)
    REGISTRY.register(TemporalSdkMetrics(f"http://{url}/metrics"))
    return runtime
