"""Document shapes, identity and timestamps."""

from __future__ import annotations

import pytest
from dropsync.adapters.base import IncomingChange
from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.documents import (
    DocumentReader,
    FutureLimit,
    inbox_change,
    parse_timestamp,
)
from dropsync.daemon.errors import DocumentError
from dropsync.daemon.pulls import incoming_to_change
from structlog.testing import capture_logs

NOW = 1_700_000_000_000


def reader(key: str | None = None, timestamp: str | None = None) -> DocumentReader:
    return DocumentReader(
        CollectionConfig("c", key=key, timestamp=timestamp),
        origin="drop",
        max_skew_ms=300_000,
        now_ms=NOW,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1696821819000, 1696821819000),
        (1696821819000.0, 1696821819000),
        ("2017-05-02T10:45:12.798Z", 1493721912798),
        ("2017-05-02T12:45:12.798+02:00", 1493721912798),
        ("2017-05-02T10:45:12Z", 1493721912000),
    ],
)
def test_timestamps_normalise_to_epoch_ms(value: object, expected: int) -> None:
    assert parse_timestamp(value, "t") == expected


@pytest.mark.parametrize(
    "value",
    [
        "2017-05-02T10:45:12",
        "yesterday",
        True,
        None,
        [],
        1.5,
        -1,
        "1696821819000",
    ],
)
def test_other_timestamps_are_bad_records(value: object) -> None:
    with pytest.raises(DocumentError, match="t"):
        parse_timestamp(value, "t")


def test_churn_envelope_defaults_to_data_id_and_updated_at() -> None:
    change = reader().change({"data": {"id": 123}, "createdAt": 1, "updatedAt": 2})
    assert (change.key, change.ts, change.deleted) == ("123", 2, False)


def test_favourites_action_keys_on_user_and_item_and_delete_is_a_delete() -> None:
    change = reader().change(
        {"user": "u1", "item": "s_1", "action": "DELETE", "actionDate": "2017-05-03T12:15:00.128Z"}
    )
    assert (change.key, change.deleted) == ("u1:s_1", True)


def test_plain_object_needs_configured_paths() -> None:
    with pytest.raises(DocumentError, match="unrecognised document"):
        reader().change({"email": "a@x", "updated_at": 5})
    change = reader(key="email", timestamp="meta.at").change(
        {"email": "a@x", "meta": {"at": "2020-01-01T00:00:00Z"}}
    )
    assert (change.key, change.ts) == ("a@x", 1577836800000)


def test_body_is_canonical_so_key_order_does_not_matter() -> None:
    one = reader().change({"data": {"id": 1, "a": 1}, "updatedAt": 2, "createdAt": 1})
    two = reader().change({"createdAt": 1, "updatedAt": 2, "data": {"a": 1, "id": 1}})
    assert one.digest == two.digest and one.body == two.body


def test_future_timestamp_beyond_skew_is_refused() -> None:
    with pytest.raises(DocumentError, match="ahead of this machine's clock"):
        reader().change({"data": {"id": 1}, "updatedAt": NOW + 300_001, "createdAt": 1})
    assert reader().change({"data": {"id": 1}, "updatedAt": NOW + 300_000, "createdAt": 1})


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((1, "c", "k", "merge", "{}", 5), "op"),
        ((1, "c", "", "upsert", "{}", 5), "key"),
        ((1, "c", "k", "upsert", "{nope", 5), "not valid JSON"),
        ((1, "c", "k", "upsert", None, 5), "body is NULL"),
        ((1, "c", "k", "upsert", "{}", "soon"), "updated_at"),
    ],
)
def test_bad_inbox_rows_get_a_reason(row: tuple[object, ...], reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        inbox_change(row, future=FutureLimit.at(NOW, 0))


def test_inbox_delete_may_have_no_body() -> None:
    change = inbox_change(
        (9, "c", "k", "delete", None, "2020-01-01T00:00:00Z"), future=FutureLimit.at(NOW, 0)
    )
    assert change.deleted and change.body is None and change.inbox_id == 9


@pytest.mark.parametrize(
    "document",
    [
        {"email": "d\x00rop@x.com", "at": NOW},
        {"data": {"id": "d\x00rop"}, "createdAt": NOW, "updatedAt": NOW},
        {"user": "u\x00", "item": "s_1", "action": "ADD", "actionDate": "2017-05-03T12:15:00Z"},
        {"user": "u", "item": "\x00", "action": "ADD", "actionDate": "2017-05-03T12:15:00Z"},
    ],
)
def test_a_key_holding_nul_is_refused_with_the_reason(document: dict[str, object]) -> None:
    plain = "email" in document
    with pytest.raises(DocumentError, match=r"holds U\+0000 \(NUL\) at character \d"):
        reader(key="email" if plain else None, timestamp="at" if plain else None).change(document)


@pytest.mark.parametrize(
    ("collection", "key", "reason"),
    [
        (b"contacts", b"d\x00rop", "key 'd' holds U+0000"),
        (b"con\x00tacts", b"k", "collection 'con' holds U+0000"),
        ("contacts", "\x00", "key '' holds U+0000"),
    ],
)
def test_an_inbox_key_or_collection_holding_nul_is_refused(
    collection: object, key: object, reason: str
) -> None:
    with pytest.raises(DocumentError, match=reason.replace("+", r"\+")):
        inbox_change((1, collection, key, b"upsert", b"{}", NOW), future=FutureLimit.at(NOW, 0))


def test_a_pulled_key_holding_nul_is_left_out_with_the_reason() -> None:
    with capture_logs() as logs:
        change = incoming_to_change(
            "crm", IncomingChange("c", "d\x00rop", NOW, False, {}), max_skew_ms=0, now=NOW
        )
    assert change is None
    assert logs[0]["event"] == "pull_change_rejected" and "U+0000" in logs[0]["reason"]
