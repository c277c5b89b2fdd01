"""The redactor: every spelling of every secret, whatever surrounds it, however many."""

from __future__ import annotations

import html
import json
from urllib.parse import quote

import pytest
from dropsync.adapters.redact import MASK, Redactor, excerpt

SECRET = 'tok/é+"q"<&>\\x'


@pytest.mark.parametrize(
    "spelled",
    [
        SECRET,
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
        json.dumps(SECRET)[1:-1].replace("/", "\\/"),
        html.escape(SECRET),
        quote(SECRET, safe=""),
        repr(SECRET.encode()),
        repr(bytearray(SECRET.encode())),
        repr(SECRET),
    ],
)
def test_every_spelling_is_removed(spelled: str) -> None:
    text = f"before {spelled} after"
    redacted = Redactor([SECRET])(text)
    assert redacted.startswith("before ") and redacted.endswith(" after")
    assert MASK in redacted
    assert "tok/" not in redacted and "tok%2F" not in redacted and "tok\\/" not in redacted


def test_many_secrets_are_found_in_one_pass() -> None:
    tokens = [f"user-token-{i:05d}-{i * 7919 % 10007:05d}" for i in range(3000)]
    redact = Redactor(tokens)
    assert len(redact.forms) > Redactor.SCAN_ABOVE
    text = " | ".join(f"{t} and {json.dumps(t)}" for t in tokens[::97]) + " user-token-x"
    cleaned = redact(text)
    assert not any(t in cleaned for t in tokens)
    assert cleaned.endswith(" user-token-x")  # a near miss stays


def test_a_cut_text_loses_what_could_begin_a_secret() -> None:
    redact = Redactor(["0123456789abcdef"])
    cut = "answer: 0123456789ab"  # the answer was cut in the middle of the token
    assert "0123" not in redact(cut, complete=False)
    assert redact(cut) == cut  # not known to be cut: nothing to remove


def test_an_excerpt_is_one_line_short_and_secret_free() -> None:
    redact = Redactor(["tok en"])
    text = "line one\n\n  tok  en\t" + "x" * 1000  # folding the spaces would rebuild it
    short = excerpt(text, redact, limit=50)
    assert "\n" not in short and len(short) == 50 and short.endswith("…")
    assert "tok en" not in short


def test_no_secrets_changes_nothing() -> None:
    assert not Redactor()
    assert Redactor(["", None])("anything") == "anything"


def test_a_value_too_short_to_tell_from_words_is_not_masked() -> None:
    # Such a secret is refused when the config is read (see daemon.process.secrets).
    assert Redactor(["abc"])("abc abc") == "abc abc"
