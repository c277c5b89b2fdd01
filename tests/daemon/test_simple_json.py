"""``simple_json`` gives exactly what the standard library's ``json`` gives.

``loads`` on JSON texts generated in every layout (indents, separators, escapes, ASCII or
not) and on arbitrary text, valid or not: the same value, or the same error. ``dumps`` on
generated values (text keys, subclasses of str and int, non-finite floats, objects that are
not JSON): the text of ``json.dumps(value, indent=2, default=str)``.
"""

from __future__ import annotations

import json
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from dropsync.daemon.process.runstate import decode, encode
from dropsync.daemon.simple_json import dumps, loads
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support import typed


class Colour(StrEnum):
    RED = "red"


class Size(IntEnum):
    BIG = 7


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def same_answer(text: str) -> None:
    try:
        expected: Any = ("value", typed(json.loads(text)))
    except (ValueError, RecursionError) as exc:
        expected = ("error", type(exc), str(exc))
    try:
        got: Any = ("value", typed(loads(text)))
    except (ValueError, RecursionError) as exc:
        got = ("error", type(exc), str(exc))
    assert got == expected


@given(
    json_values,
    st.sampled_from([None, 0, 2, "\t"]),
    st.booleans(),
    st.sampled_from([None, (",", ":"), (" , ", " : ")]),
)
def test_loads_reads_every_layout_of_json_as_json_does(
    value: object, indent: int | str | None, ascii_only: bool, separators: Any
) -> None:
    same_answer(json.dumps(value, indent=indent, ensure_ascii=ascii_only, separators=separators))


@given(
    st.text(
        alphabet=st.sampled_from(list('{}[]",:.-+eE0123456789 \n\tntrufalsx\\\x01é')), max_size=30
    )
)
@example("01")
@example("-")
@example("1.")
@example(".5")
@example("1e5")
@example("1.5e5")
@example("NaN")
@example("-Infinity")
@example('"a\\nb"')
@example('"a\x01b"')
@example('{"a":1,"a":2}')
@example("\ufeff{}")
@example("[1,]")
@example("[" * 100_000)
@example("1" * 5000)
@example('{"a" 1}')
@example("  ")
@example("")
def test_loads_answers_any_text_as_json_does(text: str) -> None:
    same_answer(text)


@given(
    st.recursive(
        scalars | st.floats() | st.sampled_from([Colour.RED, Size.BIG, b"bytes", 1 + 2j, ("a", 1)]),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
@example({"a": {}, "b": [], "c": [[]], "d": '\x7f\u2028\U0001f600"\\/\b\f\n\r\t'})
@example(float("nan"))
@example({1: "integer key"})
@example({None: 1, "x": {2.5: True}})
def test_dumps_writes_what_json_writes(value: object) -> None:
    assert dumps(value) == json.dumps(value, indent=2, default=str)


def test_a_runtime_state_is_read_back_without_json_and_with_it() -> None:
    state = {
        "format": 1,
        "pid": 4242,
        "state": "running",
        "heartbeat_at": 1_765_000_000_000,
        "heartbeat_s": 5.0,
        "pauses": [{"what": "disk full", "since": 1, "detail": 'no space: "/var" \\ é'}],
    }
    read = decode(encode(state))
    assert read is not None
    read.pop("check")
    assert read == state


@pytest.mark.parametrize("text", ['{"pid": 1, "state": "running"}', '[1, 2.5, "x", null]'])
def test_loads_reads_a_plain_text_without_importing_json(text: str) -> None:
    import os
    import subprocess
    import sys

    probe = (
        "import sys; from dropsync.daemon.simple_json import loads, dumps; "
        f"print(dumps(loads({text!r}))); print('json' in sys.modules, 're' in sys.modules)"
    )
    # Without the coverage measurement CI runs the suite under (it imports json at start).
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    *printed, imported = done.stdout.strip().splitlines()
    assert json.loads("\n".join(printed)) == json.loads(text)
    assert imported.startswith("False"), done.stdout
