"""Document shapes, identity and timestamps."""

from __future__ import annotations

import pytest
from dropsync.adapters.base import IncomingChange
from dropsync.daemon.config import CollectionConfig
from dropsync.daemon.delivery.pulls import incoming_to_change
from dropsync.daemon.documents import (
    DocumentReader,
    FutureLimit,
    inbox_change,
    parse_timestamp,
)
from dropsync.daemon.errors import DocumentError
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
    change = reader().change({"data": {"id": 123}, "createdAt": 1, "updatedAt": NOW})
    assert (change.key, change.ts, change.deleted) == ("123", NOW, False)


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
    one = reader().change({"data": {"id": 1, "a": 1}, "updatedAt": NOW, "createdAt": 1})
    two = reader().change({"createdAt": 1, "updatedAt": NOW, "data": {"a": 1, "id": 1}})
    assert one.digest == two.digest and one.body == two.body


def test_future_timestamp_beyond_skew_is_refused() -> None:
    with pytest.raises(DocumentError, match="ahead of this machine's clock"):
        reader().change({"data": {"id": 1}, "updatedAt": NOW + 300_001, "createdAt": 1})
    assert reader().change({"data": {"id": 1}, "updatedAt": NOW + 300_000, "createdAt": 1})


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((1, "c", "k", "merge", "{}", NOW), "op"),
        ((1, "c", "", "upsert", "{}", NOW), "key"),
        ((1, "c", "k", "upsert", "{nope", NOW), "not valid JSON"),
        ((1, "c", "k", "upsert", None, NOW), "body is NULL"),
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


SECONDS = 1_796_648_449  # 2026-12-07 in epoch seconds: January 1970 read as milliseconds


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (SECONDS, "s", SECONDS * 1000),
        (float(SECONDS), "s", SECONDS * 1000),
        (1_796_648_449.123, "s", 1_796_648_449_123),
        (1_796_648_449.1239, "s", 1_796_648_449_123),  # finer than 1 ms: dropped
        (0, "s", 0),
        (253_402_300_799, "s", 253_402_300_799_000),
        (1_796_648_449_123_456, "us", 1_796_648_449_123),
        (1_796_648_449_123_999.0, "us", 1_796_648_449_123),
        (1_796_648_449_123, None, 1_796_648_449_123),
        (10**12, None, 10**12),
        (1_796_648_449_123, "ms", 1_796_648_449_123),
        (5, "ms", 5),  # the unit stated: an early time is taken as it is
        (SECONDS, "ms", SECONDS),
        ("2026-12-07T13:00:49Z", None, SECONDS * 1000),  # ISO-8601: the unit does not apply
        ("2026-12-07T13:00:49Z", "s", SECONDS * 1000),
        ("2026-12-07T13:00:49Z", "us", SECONDS * 1000),
        ("1999-12-31T23:59:59Z", None, 946_684_799_000),
        ("1970-01-01T00:00:00Z", None, 0),
        ("9999-12-31T23:59:59.999Z", "us", 253_402_300_799_999),
    ],
)
def test_timestamp_units(value: object, unit: str | None, expected: int) -> None:
    assert parse_timestamp(value, "t", unit) == expected


@pytest.mark.parametrize(
    ("value", "unit", "reason"),
    [
        (
            SECONDS,
            None,
            "looks like epoch seconds: as milliseconds it is 1970-01-21T19:04:08.449Z, "
            'before 2001-09-09; if the source sends seconds, set timestamp_unit = "s"',
        ),
        (10**9, None, "looks like epoch seconds"),
        (float(SECONDS), None, "looks like epoch seconds"),
        (10**12 - 1, None, 'before 2001-09-09, and looks like a unit mistake: .* "ms"'),
        (0, None, "1970-01-01T00:00:00.000Z as milliseconds, before 2001-09-09"),
        (1_796_648_449_123_456, None, 'looks like epoch microseconds: .* timestamp_unit = "us"'),
        (1_796_648_449_123_456, "ms", "looks like epoch microseconds"),
        (1_796_648_449_123, "s", 'looks like epoch milliseconds: .* timestamp_unit = "ms"'),
        (1_796_648_449_123_456, "s", "looks like epoch microseconds"),
        (-1, "s", "before 1970"),
        (-1, None, "before 1970"),
        (-1.0, "us", "before 1970"),
        (1.5, None, "not a whole number of milliseconds"),
        (float("nan"), "s", "not a finite number"),
        (float("inf"), None, "not a finite number"),
        (10**400, "s", "out of range"),
        (10**400, None, "out of range"),
        (True, "s", "boolean"),
        ("1969-07-20T20:17:00Z", None, "'1969-07-20T20:17:00Z' is before 1970"),
        ("1969-12-31T23:59:59.999Z", "s", "before 1970"),
    ],
)
def test_a_number_outside_its_unit_is_refused_with_the_reason(
    value: object, unit: str | None, reason: str
) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_timestamp(value, "t", unit)


def test_the_collections_unit_applies_to_every_shape() -> None:
    def read(unit: str | None, document: dict[str, object]) -> int:
        collection = CollectionConfig("c", timestamp_unit=unit)
        return (
            DocumentReader(collection, origin="drop", max_skew_ms=0, now_ms=NOW).change(document).ts
        )

    envelope = {"data": {"id": 1}, "createdAt": 1, "updatedAt": 1_600_000_000}
    assert read("s", envelope) == 1_600_000_000_000
    with pytest.raises(DocumentError, match="updatedAt = 1600000000 looks like epoch seconds"):
        read(None, envelope)
    assert read("ms", envelope) == 1_600_000_000
    favourite = {"user": "u", "item": "i", "action": "ADD", "actionDate": 1_600_000_000_000_000}
    assert read("us", favourite) == 1_600_000_000_000
    favourite["actionDate"] = "2020-09-13T12:26:40Z"
    assert read("us", favourite) == read(None, favourite) == 1_600_000_000_000


def test_an_inbox_rows_number_is_read_in_its_collections_unit() -> None:
    def change(updated_at: object, unit: str | None) -> int:
        row = (1, b"c", b"k", b"upsert", b"{}", updated_at)
        return inbox_change(row, future=FutureLimit.at(NOW, 0), unit=unit).ts

    assert change(1_600_000_000, "s") == change(1_600_000_000_000, None) == 1_600_000_000_000
    with pytest.raises(DocumentError, match="updated_at = 1600000000 looks like epoch seconds"):
        change(1_600_000_000, None)
