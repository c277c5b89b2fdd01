"""Splitting drop files into documents: exact values, bad documents alone, any block size."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.base import FilePart
from dropsync.adapters.churn import adapter as churn
from dropsync.daemon.config import parse_config
from dropsync.daemon.delivery.sending import to_outgoing, to_outgoing_many
from dropsync.daemon.errors import ConfigError, DocumentError
from dropsync.daemon.ingest import jsonstream
from dropsync.daemon.ingest.jsonstream import json_documents, ndjson_documents
from dropsync.daemon.jsontext import (
    Bad,
    JsonLimits,
    exact_integers,
    load_document,
    load_outgoing,
    load_outgoing_many,
    skip_whitespace,
)
from dropsync.store.outbox import OutboxEntry
from hypothesis import given, settings
from hypothesis import strategies as st

LIMITS = JsonLimits()


def split(data: bytes, block: int | None = None, limits: JsonLimits = LIMITS) -> list[object]:
    """The documents of ``data`` as a .json file, read ``block`` bytes at a time."""
    saved = jsonstream.BLOCK_BYTES
    jsonstream.BLOCK_BYTES = block or saved
    try:
        return list(json_documents(io.BytesIO(data), limits))
    finally:
        jsonstream.BLOCK_BYTES = saved


def split_lines(data: bytes, block: int | None = None) -> list[tuple[object, int]]:
    saved = jsonstream.BLOCK_BYTES
    jsonstream.BLOCK_BYTES = block or saved
    try:
        return list(ndjson_documents(io.BytesIO(data), LIMITS))
    finally:
        jsonstream.BLOCK_BYTES = saved


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
spacing = st.sampled_from(["", " ", "\n", "\r\n", "\t ", "  \n  "])


@settings(max_examples=150, deadline=None)
@given(st.lists(json_values, max_size=6), spacing, st.integers(min_value=1, max_value=40))
def test_any_array_splits_into_its_elements_exactly_whatever_the_block_size(
    documents: list[Any], space: str, block: int
) -> None:
    text = "[" + space + ("," + space).join(json.dumps(d) for d in documents) + space + "]"
    data = text.encode()
    assert split(data, block) == split(data) == json.loads(text)
    lines = "\n".join(json.dumps(d) for d in documents).encode()
    assert [value for value, _ in split_lines(lines, block)] == documents


BROKEN = [
    b'[{"a":1},{"b":2e999},{"c":NaN},{"d":"\\udc00"},{"e":3}]',
    b'[{"a":1} {"b":2}, {"c":3}]',
    b'[{"a":1},,{"b":2}]',
    b'[{"a":1},]',
    b'[{"a":1},{"b":',
    b'[{"a":1},{"b":2}',
    b'[{"a": tru}, {"b": 1}]',
    b'[{"a": [1, 2}, {"b": 1}]',
    b'{"a": 1} ] {"b": 2} x {"c": "\xff"}',
    b'[1, "two", 3.5, true, null, 123456789012345678901234567890]',
    b'[{"x": "' + b"\\" * 9 + b'"}, {"y": "\\\\\\""}]',
    b"[" + b"[" * 5000 + b"]" * 5000 + b', {"after": 1}]',
    b"[" * 5000,
    b'\xef\xbb\xbf {"a": 1}  {"b": 2}',
    b'[{"a":1}][{"b":2}]  ',
    b'[{"s": "caf\xc3\xa9"}, {"s": "\xc3"}, {"s": "ok"}]',
]


@pytest.mark.parametrize("data", BROKEN)
def test_bad_input_reads_the_same_whatever_the_block_size(data: bytes) -> None:
    whole = split(data)
    for block in (1, 2, 3, 5, 64):
        assert split(data, block) == whole


def test_each_bad_document_costs_only_itself() -> None:
    assert split(BROKEN[0]) == [
        {"a": 1},
        Bad("the number 2e999 is too large for a 64-bit float: send it as a string"),
        Bad("NaN is not a JSON number: write null or a string instead"),
        {"d": "\udc00"},  # its canonical body refuses it (documents.canonical)
        {"e": 3},
    ]
    assert split(BROKEN[2])[1] == Bad(
        "not valid JSON: Expecting value (at character 0 of the document)"
    )
    assert split(BROKEN[3])[1] == Bad("a ',' with no document after it, before the closing ']'")
    assert split(BROKEN[6])[1] == {"b": 1}
    # Brackets that do not match hide where the next document starts: the rest is one.
    assert split(BROKEN[7]) == [
        Bad("not valid JSON: Expecting ',' delimiter (at character 11 of the document)")
    ]
    assert split(BROKEN[11])[1] == {"after": 1}
    assert split(BROKEN[14]) == [{"a": 1}, {"b": 2}]
    first, bad, last = split(BROKEN[15])
    assert first == {"s": "café"} and last == {"s": "ok"}
    assert isinstance(bad, Bad) and "byte 0xC3" in bad.reason


def test_a_document_too_long_is_skipped_without_being_kept() -> None:
    limits = JsonLimits(max_depth=64, max_bytes=1000)
    data = b'[{"a": "' + b"x" * 100_000 + b'"}, {"b": 1}]'
    assert split(data, 64, limits) == [
        Bad("the document is longer than the limit of 1,000 bytes (drop.max_document_mb)"),
        {"b": 1},
    ]
    lines = b'{"a": "' + b"x" * 100_000 + b'"}\n\n{"b": 1}'
    assert [line for _, line in split_lines(lines, 64)] == [1, 3]


def test_inbox_bodies_follow_the_same_rules() -> None:
    assert load_document(b'{"n": 123456789012345678901234567890}', LIMITS) == {
        "n": 123456789012345678901234567890
    }
    for body, words in [
        (b"{\xff}", "not valid UTF-8 text (byte 0xFF at offset 1)"),
        (b'{"n": 1e400}', "too large for a 64-bit float"),
        (b'{"n": Infinity}', "Infinity is not a JSON number"),
        (b"[" * 100_000, "nested more than 64 levels deep"),
        (b'{"a": 1} x', "unexpected text after the JSON value"),
        (b"  ", "the text is empty"),
    ]:
        with pytest.raises(DocumentError, match=re.escape(words)):
            load_document(body, LIMITS)


def test_stored_bodies_are_sent_with_every_digit() -> None:
    big = 123456789012345678901234567890
    stored = orjson.dumps(exact_integers({"a": [big, -big, 1, 2**64 - 1]})).decode()
    assert stored == f'{{"a":[{big},-{big},1,18446744073709551615]}}'
    assert orjson.dumps(load_outgoing(stored)) == stored.encode()
    plain = '{"email":"a@x","n":1.5,"phone":"+3816385383921234567890"}'
    assert load_outgoing(plain) == orjson.loads(plain)


def test_a_batch_of_stored_bodies_reads_as_each_alone() -> None:
    big = 123456789012345678901234567890
    plain = ['{"email":"a@x","n":1.5}', '{"n":18446744073709551615}', "[1,2]", '"text"']
    with_big = orjson.dumps(exact_integers({"a": [big, -big]})).decode()
    for texts in (plain, [*plain, with_big], [None, with_big, None], [None], []):
        # Written back as the adapters write them (a long integer is a Fragment).
        assert [orjson.dumps(value) for value in load_outgoing_many(texts)] == [
            orjson.dumps(None if text is None else load_outgoing(text)) for text in texts
        ]
    assert orjson.dumps(load_outgoing_many(["{}", with_big])[1]) == with_big.encode()
    # Bodies meet only in the look for long integers: digits at the end of one and the
    # start of the next are not one number.
    assert load_outgoing_many(["1234567890", "1234567890123"]) == [1234567890, 1234567890123]
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate, as load_outgoing says
        load_outgoing_many(['{"a":1}', '{"a":"\ud800"}'.encode().decode("unicode_escape")])
    entries = [
        OutboxEntry(1, "users", "1", 5, False, with_big, 0, 7),
        OutboxEntry(2, "users", "2", 6, True, None, 0, 8),
        OutboxEntry(3, "users", "3", 6, False, "[1]", 0, 8),
    ]
    many, each = to_outgoing_many("p", entries), [to_outgoing("p", e) for e in entries]
    assert [(*change[:5], orjson.dumps(change.body), change[6]) for change in many] == [
        (*change[:5], orjson.dumps(change.body), change[6]) for change in each
    ]


@pytest.mark.parametrize(
    ("drop", "key"),
    [
        ({"max_depth": 0}, "drop.max_depth"),
        ({"max_depth": 255}, "drop.max_depth"),
        ({"max_depth": "deep"}, "drop.max_depth"),
        ({"max_document_mb": 0}, "drop.max_document_mb"),
        ({"max_document_mb": 65}, "drop.max_document_mb"),
    ],
)
def test_the_limits_are_validated_naming_the_file_and_key(drop: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"dropsync.toml: {key}: expected")):
        parse_config({"drop": drop}, "dropsync.toml")
    limits = parse_config({"drop": {"max_depth": 8, "max_document_mb": 0.5}}, "x").json_limits
    assert limits == JsonLimits(max_depth=8, max_bytes=1 << 19)


def test_a_churn_file_carries_integers_past_64_bits_and_passes_its_check(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    body = orjson.dumps(
        exact_integers({"createdAt": 1, "data": {"id": 1, "n": big}, "updatedAt": 1}),
        option=orjson.OPT_SORT_KEYS,
    ).decode()
    provider = churn.build(
        "churn", "http://127.0.0.1:9", {"tables": {"users": "user"}, "brand_id": 1}, None, 1, None
    )
    change = to_outgoing("churn", OutboxEntry(1, "users", "1", 1, False, body, 0))
    written = tmp_path / "part.json"
    written.write_bytes(b"[" + provider.document(change) + b"]")
    assert b'"n":%d' % big in written.read_bytes()
    assert provider.verify_file(FilePart(written, {}, 1, written.stat().st_size)) is None


@given(st.text(alphabet=" \t\n\r\x0b\x0ca{é", max_size=8), st.integers(min_value=-3, max_value=11))
def test_skip_whitespace_finds_what_the_pattern_finds(text: str, pos: int) -> None:
    """Its shortcut (no regex when ``pos`` is at a non-space or at the end) changes nothing."""
    found = re.compile(r"[ \t\n\r]*").match(text, pos)
    assert found is not None
    assert skip_whitespace(text, pos) == found.end()
