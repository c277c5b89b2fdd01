"""``GET /metrics``: the daemon's instruments (``daemon.metrics``) and what is read at
scrape time, in the Prometheus text format.

Read at scrape time, as gauges: one read of the store (``store.callbacks.metrics_snapshot``:
pending entries and the age of the oldest per provider, states, dead letters, deliveries,
files, the inbox, paused users) and the daemon's pauses (``daemon.process.health.PauseBoard``). A
provider's state is one series per state, 1 for the current one and 0 for the others
(node_exporter's way with an enum): a state the provider left reads 0 rather than going
stale. Each pause condition is a series too, 0 or 1, and so is whether the last reload was
taken (``dropsync_config_last_reload_successful``). Should the store not be readable, the
answer is still 200 with every instrument and pause, and ``dropsync_store_readable 0``: the
daemon is up, its store is the problem (an alert says which).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dropsync.store.states import ProviderState
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..metrics import REGISTRY

# A pause's condition (daemon.health, store.errors, daemon.watcher) as a label value; a pause
# of the listener is "listener" whatever its condition (address in use, not available).
PAUSE_CONDITIONS = {
    "store busy": "store_busy",
    "disk full": "disk_full",
    "store unavailable": "store_unavailable",
    "drop folder missing": "drop_folder_missing",
}
PAUSE_LABELS = (*PAUSE_CONDITIONS.values(), "listener", "other")

# A pause as PauseBoard keeps it: (work, condition) -> details.
Pauses = Mapping[tuple[str, str], Any]


def pause_label(work: str, condition: str) -> str:
    """The ``condition`` label of a pause of ``work``."""
    if work == "listener":
        return "listener"
    return PAUSE_CONDITIONS.get(condition, "other")


class _StoreGauges(Collector):
    """One read of the store, as gauges (None: the store could not be read)."""

    def __init__(self, snapshot: dict[str, Any] | None) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        readable = GaugeMetricFamily(
            "dropsync_store_readable", "1 if this scrape could read the store, else 0"
        )
        readable.add_metric([], 0 if self.snapshot is None else 1)
        yield readable
        if self.snapshot is not None:
            yield from _providers(self.snapshot)
            yield from _tables(self.snapshot)


def _providers(snap: dict[str, Any]) -> Iterator[Metric]:
    pending = GaugeMetricFamily(
        "dropsync_pending", "Outbox entries waiting per provider", labels=["provider"]
    )
    oldest = GaugeMetricFamily(
        "dropsync_oldest_pending_age_seconds",
        "Age of the provider's oldest pending outbox entry (0: none pending); status --check "
        "warns on it",
        labels=["provider"],
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
        "1 for the provider's current state, 0 for each other state",
        labels=["provider", "state"],
    )
    users = GaugeMetricFamily(
        "dropsync_paused_users",
        "Users (lanes) of the provider paused: credentials refused, or none while entries wait",
        labels=["provider"],
    )
    paused_users = dict(snap.get("paused_users", ()))
    for name, current, waiting, letters, ok_at, late, age in snap["providers"]:
        pending.add_metric([name], waiting)
        oldest.add_metric([name], max(age or 0, 0))
        dead.add_metric([name], letters)
        unconfirmed.add_metric([name], late or 0)
        for value in ProviderState:
            state.add_metric([name, value], 1 if value == current else 0)
        if ok_at is not None:
            last_ok.add_metric([name], ok_at / 1000)
        users.add_metric([name], paused_users.get(name, 0))
    yield from (pending, oldest, dead, unconfirmed, last_ok, state, users)


def _tables(snap: dict[str, Any]) -> Iterator[Metric]:
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
    yield from (batches, items, files, inbox)


class _Pauses(Collector):
    """The daemon's pauses, one series per condition (0 or 1), and its last reload."""

    def __init__(self, pauses: Pauses, reload_refused: bool) -> None:
        self.pauses = pauses
        self.reload_refused = reload_refused

    def collect(self) -> Iterator[Metric]:
        current = {pause_label(work, condition) for work, condition in self.pauses}
        paused = GaugeMetricFamily(
            "dropsync_paused",
            "1 while work waits on the condition (store busy, disk full, ...), else 0",
            labels=["condition"],
        )
        for label in PAUSE_LABELS:
            paused.add_metric([label], 1 if label in current else 0)
        reload = GaugeMetricFamily(
            "dropsync_config_last_reload_successful",
            "0 while the daemon runs on its previous config, its last reload refused; else 1",
        )
        reload.add_metric([], 0 if self.reload_refused else 1)
        yield from (paused, reload)


class _Scrape(Collector):
    """Everything one scrape answers."""

    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def render_metrics(
    snapshot: dict[str, Any] | None, pauses: Pauses, *, reload_refused: bool = False
) -> tuple[bytes, str]:
    """The exposition text and its content type: the instruments, the store's figures
    (``snapshot``; None: the store could not be read), the pauses and the last reload."""
    scrape = _Scrape(REGISTRY, _StoreGauges(snapshot), _Pauses(pauses, reload_refused))
    return generate_latest(scrape), CONTENT_TYPE_LATEST
