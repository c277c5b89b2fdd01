"""Requests a provider decides one by one (a seat it grants or refuses): recording its answers.

A request is a record of a request collection (``ProviderConfig.request_collections``),
routed to its provider like any change, so it is durable, coalesced, retried with
backoff while the provider is unreachable, and sent at once when the merge wakes the
flusher. The adapter answers with one ``RequestOutcome`` per request and the records its
answer proves (what it created when it granted one); ``record_answer`` keeps both in the same
transaction as the delivery, so a request is either still queued or decided, never lost
between the two. A refused request leaves the outbox like a delivered one: it is never
asked again unless a new version of it arrives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

import structlog
from dropsync.adapters.base import PushResult
from dropsync.store import outbox, requests
from dropsync.store.merge import MergeResult, apply_changes

from ..config import Config
from .pulls import to_changes
from .sending import AnswerRecorder

log = structlog.get_logger(__name__)


def answer_recorder(provider: str, config: Callable[[], Config]) -> AnswerRecorder:
    """The function the flusher runs, inside its delivery transaction, for per-request answers."""

    def record(
        conn: sqlite3.Connection,
        entries: Sequence[outbox.OutboxEntry],
        result: PushResult,
        now: int,
    ) -> MergeResult:
        current = config()
        by_id = {entry.id: entry for entry in entries}
        decided = []
        for outcome in result.outcomes:
            entry = by_id.get(outcome.entry_id)
            if entry is None:
                continue
            decided.append(
                (
                    entry.collection,
                    entry.key,
                    entry.updated_at,
                    outcome.status,
                    outcome.reason,
                    outcome.remote_ref,
                )
            )
            log.info(
                "request_decided",
                provider=provider,
                collection=entry.collection,
                key=entry.key,
                status=outcome.status,
                reason=outcome.reason,
                remote_ref=outcome.remote_ref,
            )
        requests.record_outcomes(conn, provider, decided, now=now)
        changes = to_changes(provider, result.changes, current)
        return apply_changes(conn, changes, current.routes(), now=now)

    return record


def set_routes(conn: sqlite3.Connection, config: Config) -> None:
    """Write the configured request routes (what the views of a kind's requests read)."""
    requests.set_request_routes(
        conn,
        [
            (collection, provider.name, provider.kind)
            for provider in config.providers.values()
            for collection in provider.request_collections()
        ],
    )
