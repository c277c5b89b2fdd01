"""``GET /metrics``: the store's figures in the Prometheus text format (prometheus_client)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _Snapshot(Collector):
    """Exposes one snapshot of the store (read once per scrape)."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        pending = GaugeMetricFamily(
            "dropsync_pending", "Outbox entries waiting per provider", labels=["provider"]
        )
        dead = GaugeMetricFamily(
            "dropsync_dead_letters", "Dead letters per provider", labels=["provider"]
        )
        unconfirmed = GaugeMetricFamily(
            "dropsync_unconfirmed_batches",
            "Accepted batches past their confirm timeout",
            labels=["provider"],
        )
        last_ok = GaugeMetricFamily(
            "dropsync_last_success_timestamp_seconds",
            "When the provider last accepted something",
            labels=["provider"],
        )
        state = GaugeMetricFamily(
            "dropsync_provider_state",
            "1 for the provider's current state",
            labels=["provider", "state"],
        )
        for name, current, waiting, letters, ok_at, late in snap["providers"]:
            pending.add_metric([name], waiting)
            dead.add_metric([name], letters)
            unconfirmed.add_metric([name], late or 0)
            state.add_metric([name, current], 1)
            if ok_at is not None:
                last_ok.add_metric([name], ok_at / 1000)
        batches = GaugeMetricFamily(
            "dropsync_deliveries", "Delivery attempts by state", labels=["provider", "state"]
        )
        items = GaugeMetricFamily(
            "dropsync_delivery_items",
            "Records in delivery attempts by state",
            labels=["provider", "state"],
        )
        for name, current, count, records in snap["deliveries"]:
            batches.add_metric([name, current], count)
            items.add_metric([name, current], records)
        files = GaugeMetricFamily("dropsync_files", "Drop files by status", labels=["status"])
        for status, count in snap["files"]:
            files.add_metric([status], count)
        inbox = GaugeMetricFamily("dropsync_inbox_pending", "Inbox rows not yet applied")
        inbox.add_metric([], snap["inbox_pending"])
        yield from (pending, dead, unconfirmed, last_ok, state, batches, items, files, inbox)


def render_metrics(snapshot: dict[str, Any]) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST
