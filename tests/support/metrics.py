"""Reading a process's Prometheus endpoint as a scraper does (prometheus_client's parser)."""

from __future__ import annotations

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 10.0


def scrape(url: str) -> dict[str, Metric]:
    """The families a GET of `url` answers, by name (a counter's without `_total`)."""
    response = httpx.get(url, timeout=SCRAPE_TIMEOUT_S)
    response.raise_for_status()
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def total(families: dict[str, Metric], sample_name: str, **labels: str) -> float:
    """The sum of the samples named `sample_name` whose labels include `labels`."""
    family_name = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    found = families.get(family_name) or families.get(sample_name)
    if found is None:
        return 0.0
    return sum(
        s.value for s in found.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )
