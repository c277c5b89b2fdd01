"""A batch's outgoing changes and its requests, made the fast way, are those of the plain way."""

from __future__ import annotations

import orjson
from dropsync.adapters.base import change_idempotency_key
from dropsync.daemon.delivery.batches import split_by_bytes
from dropsync.daemon.delivery.sending import to_outgoing, to_outgoing_many
from dropsync.store.outbox import OutboxEntry
from hypothesis import given
from hypothesis import strategies as st

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
bodies = st.one_of(
    st.none(),
    st.dictionaries(
        texts, st.one_of(st.integers(-(1 << 63), 1 << 63), texts, st.booleans()), max_size=4
    ).map(lambda body: orjson.dumps(body).decode()),
    st.just("[1, 2]"),
    st.just("123456789012345678901234567890"),
    st.just('{"n":123456789012345678901234567890}'),
)
entries = st.lists(
    st.tuples(
        texts, texts, st.integers(0, 1 << 62), st.booleans(), bodies, st.integers(0, 1 << 62)
    ),
    max_size=30,
).map(
    lambda rows: [
        OutboxEntry(i + 1, collection, key, updated_at, deleted, body, 0, queued)
        for i, (collection, key, updated_at, deleted, body, queued) in enumerate(rows)
    ]
)


@given(texts, entries)
def test_to_outgoing_many_is_to_outgoing_of_each(provider: str, batch: list[OutboxEntry]) -> None:
    many = to_outgoing_many(provider, batch)
    # A long integer's Fragment compares by identity: bodies compare as what is sent.
    assert [(*c[:5], orjson.dumps(c.body), c[6]) for c in many] == [
        (*c[:5], orjson.dumps(c.body), c[6]) for c in (to_outgoing(provider, e) for e in batch)
    ]
    for entry, change in zip(batch, many, strict=True):
        assert change.idempotency_key == change_idempotency_key(
            provider, entry.collection, entry.key, entry.updated_at, entry.enqueued_at
        )


def split_one_by_one(
    batch: list[OutboxEntry], max_items: int, max_bytes: int
) -> list[list[OutboxEntry]]:
    """The cut made entry by entry (``split_by_bytes`` without its shortcut)."""
    requests: list[list[OutboxEntry]] = []
    current: list[OutboxEntry] = []
    size = 0
    for entry in batch:
        entry_size = len(entry.body or "") + 64
        if current and (len(current) >= max_items or size + entry_size > max_bytes):
            requests.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    if current:
        requests.append(current)
    return requests


@given(entries, st.integers(1, 40), st.integers(0, 4000))
def test_split_by_bytes_is_the_cut_entry_by_entry(
    batch: list[OutboxEntry], max_items: int, max_bytes: int
) -> None:
    assert split_by_bytes(batch, max_items, max_bytes) == split_one_by_one(
        batch, max_items, max_bytes
    )
