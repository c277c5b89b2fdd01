"""The daemon's own instruments: counters and histograms, for ``GET /metrics``.

Prometheus' conventions (docs/operations.md, "Metrics", lists every metric): a counter ends in
``_total`` and only grows for as long as the process runs; a duration is a histogram in
seconds; a label holds one of a small, fixed set of values, or a configured name (a provider,
a route, a collection), never a key, a file name or a user. The instruments live in one
registry made once per process (``REGISTRY``): a reload of the config never makes them
again, so a counter read before a reload is never more than one read after it.

The work counts itself where it happens, once per batch, file or request, never per record
(the delivery loop's cost per record is measured: bench/). What is read from the store at
scrape time (pending entries, states, pauses) is ``daemon.inbound.metrics_scrape``.

Collections are names from the config, but a drop folder may also hold folders no config
names (they are ingested with the shapes every collection takes): the first
``MAX_UNCONFIGURED`` of those are labels of their own, any later one is counted as
``OTHER_COLLECTION``, so a folder made per day cannot grow the series without bound.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, TypeVar

from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderError,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
    RetryableError,
    UnexpectedAnswer,
)
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from .clock import now_ms

if TYPE_CHECKING:
    from .config import Config

T = TypeVar("T")

# ``<name>_created`` series (one more per counter and histogram child) tell nothing here.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, open fds
PlatformCollector(registry=REGISTRY)  # python_info
GCCollector(registry=REGISTRY)  # python_gc_*: the daemon tunes its garbage collector

# Histogram buckets, in seconds (docs/operations.md says why these).
# One request to a provider: a small POST takes milliseconds, an upload of files of 2 GB
# minutes; the requests' own deadlines (timeout_s) end the long tail.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# From a record queued to its delivery: a second while online; hours or days while a
# provider is offline or auth-failed (status --check warns at 15 min, is critical at 1 h).
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400, 43200, 86400)
# One drop file, claimed to filed away: a small file in milliseconds, 2 GB in minutes.
INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# Fixed label values.
DOCUMENT_OUTCOMES = ("applied", "unchanged", "rejected")
FILE_OUTCOMES = ("done", "duplicate", "quarantined")
REQUEST_OUTCOMES = (
    "ok",
    "refused",
    "auth_failed",
    "unavailable",
    "throttled",
    "unexpected_answer",
    "misconfigured",
    "retryable",
    "error",
)
REFUSAL_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    408: "timeout",
    413: "too_large",
}
# ...and "replay" (a signature accepted before), "error" (answered 500), "other" (any other).
REFUSALS = (*REFUSAL_REASONS.values(), "replay", "error", "other")

OTHER_COLLECTION = "(other)"
MAX_UNCONFIGURED = 20
MAX_LABEL_CHARS = 100

BUILD = Info("dropsync_build", "The running dropsync: its version and Python's", registry=REGISTRY)

INGEST_DOCUMENTS = Counter(
    "dropsync_ingest_documents_total",
    "Documents of drop files merged (applied: changed a record; unchanged: an older or the "
    "same version) or rejected, by collection",
    ["collection", "outcome"],
    registry=REGISTRY,
)
INGEST_FILES = Counter(
    "dropsync_ingest_files_total",
    "Drop files filed away (done, duplicate of a file ingested before, quarantined), by collection",
    ["collection", "outcome"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "dropsync_ingest_file_duration_seconds",
    "Time to ingest one drop file, from its claim to its filing away",
    buckets=INGEST_BUCKETS,
    registry=REGISTRY,
)
INBOX_ROWS = Counter(
    "dropsync_inbox_rows_total",
    "SQL inbox rows processed (applied, unchanged, rejected)",
    ["outcome"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "dropsync_delivery_requests_total",
    "Delivery requests (batches, uploads) answered or failed, by provider and outcome",
    ["provider", "outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "dropsync_delivery_request_duration_seconds",
    "Time one delivery request took, whatever its outcome",
    ["provider"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
DROP_TO_PROVIDER = Histogram(
    "dropsync_drop_to_provider_seconds",
    "Time from a record's queueing (its ingest or merge) to its delivery: one observation "
    "per delivered request, its oldest record",
    ["provider"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
DELIVERED = Counter(
    "dropsync_records_delivered_total",
    "Records a provider took (accepted or confirmed at once)",
    ["provider"],
    registry=REGISTRY,
)
CONFIRMED = Counter(
    "dropsync_records_confirmed_total",
    "Records confirmed: at delivery, or later by a provider's callback or webhook",
    ["provider"],
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "dropsync_records_dead_lettered_total",
    "Records moved to dead letters (refused by the provider or by the adapter's check)",
    ["provider"],
    registry=REGISTRY,
)
UPLOADED = Counter(
    "dropsync_uploaded_bytes_total",
    "Bytes of files uploaded to providers that take files, in uploads the provider answered",
    ["provider"],
    registry=REGISTRY,
)
PULL_REQUESTS = Counter(
    "dropsync_pull_requests_total",
    "Pull requests: pages read (ok) and failed pulls, by provider and outcome",
    ["provider", "outcome"],
    registry=REGISTRY,
)
PULLED = Counter(
    "dropsync_pulled_changes_total",
    "Changes read from providers' pulls (before the merge)",
    ["provider"],
    registry=REGISTRY,
)
CALLBACKS = Counter(
    "dropsync_callbacks_received_total",
    "Calls to a provider kind's inbound routes (callbacks, webhooks), by route",
    ["route"],
    registry=REGISTRY,
)
CALLBACKS_REFUSED = Counter(
    "dropsync_callbacks_refused_total",
    "Calls to inbound routes answered 4xx or 500, by route and reason",
    ["route", "reason"],
    registry=REGISTRY,
)


def _build_version() -> str:
    try:
        return version("dropsync")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
        return "unknown"


BUILD.info({"version": _build_version(), "python": platform.python_version()})


class _Collections:
    """Collection names as labels: configured ones, the first unconfigured ones, then one
    label for the rest."""

    def __init__(self) -> None:
        self.unconfigured: set[str] = set()

    def label(self, name: str, configured: Container[str]) -> str:
        if name in configured or name in self.unconfigured:
            return name
        if len(self.unconfigured) >= MAX_UNCONFIGURED or not _fits_label(name):
            return OTHER_COLLECTION
        self.unconfigured.add(name)
        return name


def _fits_label(name: str) -> bool:
    """A name that reads well as a label value: printable UTF-8, not too long."""
    if not name or len(name) > MAX_LABEL_CHARS or not name.isprintable():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a folder name that is not UTF-8 (surrogate escapes)
        return False
    return True


_collections = _Collections()


def collection_label(name: str, configured: Container[str]) -> str:
    """The label of collection ``name`` (``configured``: the config's collections)."""
    return _collections.label(name, configured)


def declare(config: Config) -> None:
    """Make the series of what the config names, at 0: a rate or an alert on a counter that
    has not moved yet reads 0 instead of nothing. Idempotent (called again on reload)."""
    for collection in config.collections:
        label = collection_label(collection, config.collections)
        for outcome in DOCUMENT_OUTCOMES:
            INGEST_DOCUMENTS.labels(label, outcome)
        for outcome in FILE_OUTCOMES:
            INGEST_FILES.labels(label, outcome)
    for outcome in DOCUMENT_OUTCOMES:
        INBOX_ROWS.labels(outcome)
    for name in config.providers:
        REQUESTS.labels(name, "ok")
        REQUEST_SECONDS.labels(name)
        DROP_TO_PROVIDER.labels(name)
        for counter in (DELIVERED, CONFIRMED, DEAD_LETTERED, UPLOADED, PULLED):
            counter.labels(name)
        PULL_REQUESTS.labels(name, "ok")


def declare_routes(names: Iterable[str]) -> None:
    """Make the series of the inbound routes served, at 0."""
    for name in names:
        CALLBACKS.labels(name)


# -- ingest ---------------------------------------------------------------------------------


def documents(collection: str, applied: int, unchanged: int, rejected: int) -> None:
    """A committed batch of a drop file (``collection``: its label)."""
    INGEST_DOCUMENTS.labels(collection, "applied").inc(applied)
    INGEST_DOCUMENTS.labels(collection, "unchanged").inc(unchanged)
    INGEST_DOCUMENTS.labels(collection, "rejected").inc(rejected)


def file_filed(collection: str, outcome: str, started: float | None = None) -> None:
    """A drop file filed away; ``started``: ``time.perf_counter()`` when its ingest began."""
    INGEST_FILES.labels(collection, outcome).inc()
    if started is not None:
        INGEST_SECONDS.observe(time.perf_counter() - started)


def inbox_rows(applied: int, unchanged: int, rejected: int) -> None:
    """A committed batch of SQL inbox rows."""
    INBOX_ROWS.labels("applied").inc(applied)
    INBOX_ROWS.labels("unchanged").inc(unchanged)
    INBOX_ROWS.labels("rejected").inc(rejected)


# -- delivery -------------------------------------------------------------------------------

_OUTCOMES: tuple[tuple[type[ProviderError], str], ...] = (
    (ProviderUnavailable, "unavailable"),
    (ProviderThrottled, "throttled"),
    (UnexpectedAnswer, "unexpected_answer"),
    (ProviderMisconfigured, "misconfigured"),
    (RetryableError, "retryable"),
    (AuthError, "auth_failed"),
    (PermanentError, "refused"),
)


def outcome_of(exc: ProviderError) -> str:
    """The outcome label of a failed request (by the error's type, as the loop sorts it)."""
    for kind, outcome in _OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return "error"


async def timed_request(provider: str, push: Callable[[], Awaitable[T]]) -> T:
    """Send one delivery request (``push()``): counted by outcome, its duration observed."""
    started = time.perf_counter()
    try:
        result = await push()
    except ProviderError as exc:
        REQUESTS.labels(provider, outcome_of(exc)).inc()
        REQUEST_SECONDS.labels(provider).observe(time.perf_counter() - started)
        raise
    REQUESTS.labels(provider, "ok").inc()
    REQUEST_SECONDS.labels(provider).observe(time.perf_counter() - started)
    return result


def delivered(provider: str, records: int, *, confirmed: bool, oldest_queued_at: int) -> None:
    """A delivery recorded: ``records`` taken by the provider (``confirmed`` at once), the
    oldest of them queued at ``oldest_queued_at`` (epoch ms; 0: unknown, not observed)."""
    DELIVERED.labels(provider).inc(records)
    if confirmed:
        CONFIRMED.labels(provider).inc(records)
    if oldest_queued_at > 0:
        DROP_TO_PROVIDER.labels(provider).observe(max(now_ms() - oldest_queued_at, 0) / 1000)


def confirmed(provider: str, records: int) -> None:
    """Records of accepted deliveries confirmed later (a callback, a webhook)."""
    if records:
        CONFIRMED.labels(provider).inc(records)


def dead_lettered(provider: str, records: int) -> None:
    """Records moved to dead letters."""
    DEAD_LETTERED.labels(provider).inc(records)


def uploaded(provider: str, size: int) -> None:
    """An upload of ``size`` bytes of files was answered."""
    UPLOADED.labels(provider).inc(size)


# -- pulls ----------------------------------------------------------------------------------


def pulled(provider: str, changes: int) -> None:
    """A page of a pull was read, with ``changes`` changes."""
    PULL_REQUESTS.labels(provider, "ok").inc()
    PULLED.labels(provider).inc(changes)


def pull_failed(provider: str, exc: ProviderError) -> None:
    """A pull ended in a provider's error."""
    PULL_REQUESTS.labels(provider, outcome_of(exc)).inc()


# -- the listener ---------------------------------------------------------------------------


def callback(route: str, status: int, *, replay: bool = False) -> None:
    """A call to an inbound route, answered ``status`` (``replay``: refused as one)."""
    CALLBACKS.labels(route).inc()
    if status < 400:
        return
    if replay:
        reason = "replay"
    elif status >= 500:
        reason = "error"
    else:
        reason = REFUSAL_REASONS.get(status, "other")
    CALLBACKS_REFUSED.labels(route, reason).inc()
