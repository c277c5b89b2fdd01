"""Reading ``/metrics`` in tests: the families (prometheus_client's parser, which refuses what
is not the text format), their samples by name and labels, and the names a query may use."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# A sample: its name and its labels, sorted.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def families(text: str) -> dict[str, Metric]:
    """The metric families of an exposition, by name (``_total`` is not part of a counter's)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str) -> dict[SampleKey, float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families(text).values()
        for s in family.samples
    }


def scrape(url: str) -> str:
    """``GET /metrics`` of the listener at ``url`` (answered 200)."""
    answer = httpx.get(url + "/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return answer.text


def value(found: dict[SampleKey, float], name: str, **labels: str) -> float:
    """The value of one sample (0 if it is not there: a counter not counted yet)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def sample_names(metric_families: Iterable[Metric]) -> set[str]:
    """The series names a query may use for these families: a counter's ``_total``, a
    histogram's ``_bucket``, ``_sum`` and ``_count``, a gauge's (or info's) own name; whether
    the family has samples yet or not."""
    names = set()
    for family in metric_families:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names
