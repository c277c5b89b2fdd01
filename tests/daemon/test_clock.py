"""Timestamps and ages as the CLI and messages print them."""

from __future__ import annotations

from dropsync.daemon.clock import format_age, format_timestamp
from dropsync.daemon.documents import parse_timestamp


def test_format_timestamp_is_gmt_with_milliseconds() -> None:
    assert format_timestamp(1493721912798) == "2017-05-02T10:45:12.798Z"


def test_format_timestamp_round_trips_through_parse_at_the_edges() -> None:
    for ms in (0, 1, 999, 253402300799999):
        assert parse_timestamp(format_timestamp(ms), "ts") == ms


def test_format_age_picks_a_unit() -> None:
    now = 10_000_000
    assert format_age(None, now) == "-"
    assert format_age(now - 42_000, now) == "42s"
    assert format_age(now - 17 * 60_000, now) == "17m"
    assert format_age(now - 3 * 3_600_000 - 1_800_000, now) == "3.5h"
    assert format_age(now + 5_000, now) == "0s"
