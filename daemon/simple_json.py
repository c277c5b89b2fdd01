"""JSON for the commands that must start fast (``dropsync status``), without ``json``.

Importing the standard library's ``json`` imports ``re`` and, with it, ``enum`` and
``functools``: about 9 ms, more than half of what ``import sqlite3`` (the status bench's
reference, bench/cli_startup.py) costs. Status reads one small JSON text (the daemon's
runtime file, ``process.runstate``) and prints one (``status --json``), so both are done
here for the plain cases, and anything else is handed to ``json`` itself:

* ``loads`` reads objects, arrays, strings without an escape, integers, numbers with a
  fraction but no exponent, ``true``, ``false`` and ``null``; any other text (an escape, an
  exponent, ``NaN``, or text that is not JSON) goes to ``json.loads``, which answers or
  raises as always;
* ``dumps`` writes what ``json.dumps(value, indent=2, default=str)`` writes, for dicts
  whose keys are text (else ``json.dumps``).

tests/daemon/test_simple_json.py holds both to ``json``'s answers on generated values.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

_SPACE = " \t\n\r"
_DIGITS = "0123456789"
_CONTROL = frozenset(chr(code) for code in range(32))
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"
_WORDS = (("true", True), ("false", False), ("null", None))
_INFINITY = float("inf")


class _NotPlain(Exception):
    """Text or a value outside the plain cases: the standard library's ``json`` decides."""


def loads(text: str) -> Any:
    """The value of the JSON ``text``, as ``json.loads(text)`` gives it (or raises)."""
    try:
        value, end = _value(text, _skip(text, 0))
        if _skip(text, end) != len(text):
            raise _NotPlain
        return value
    except (_NotPlain, IndexError, ValueError, RecursionError):
        import json

        return json.loads(text)


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def _value(text: str, at: int) -> tuple[Any, int]:
    char = text[at]
    if char == '"':
        return _string(text, at)
    if char == "{":
        return _object(text, at)
    if char == "[":
        return _array(text, at)
    if char == "-" or char in _DIGITS:
        return _number(text, at)
    for word, value in _WORDS:
        if text.startswith(word, at):
            return value, at + len(word)
    raise _NotPlain


def _string(text: str, at: int) -> tuple[str, int]:
    end = text.find('"', at + 1)
    if end < 0:
        raise _NotPlain
    value = text[at + 1 : end]
    if "\\" in value or not _CONTROL.isdisjoint(value):
        raise _NotPlain
    return value, end + 1


def _object(text: str, at: int) -> tuple[dict[str, Any], int]:
    found: dict[str, Any] = {}
    at = _skip(text, at + 1)
    if text[at] == "}":
        return found, at + 1
    while True:
        if text[at] != '"':
            raise _NotPlain
        key, at = _string(text, at)
        at = _skip(text, at)
        if text[at] != ":":
            raise _NotPlain
        found[key], at = _value(text, _skip(text, at + 1))
        at = _skip(text, at)
        if text[at] == "}":
            return found, at + 1
        if text[at] != ",":
            raise _NotPlain
        at = _skip(text, at + 1)


def _array(text: str, at: int) -> tuple[list[Any], int]:
    found: list[Any] = []
    at = _skip(text, at + 1)
    if text[at] == "]":
        return found, at + 1
    while True:
        item, at = _value(text, at)
        found.append(item)
        at = _skip(text, at)
        if text[at] == "]":
            return found, at + 1
        if text[at] != ",":
            raise _NotPlain
        at = _skip(text, at + 1)


def _number(text: str, at: int) -> tuple[int | float, int]:
    start = at
    if text[at] == "-":
        at += 1
    first = at
    while at < len(text) and text[at] in _DIGITS:
        at += 1
    if at == first or (text[first] == "0" and at - first > 1):
        raise _NotPlain  # no digit, or a leading zero: not JSON
    if at < len(text) and text[at] in ".eE":
        if text[at] != ".":
            raise _NotPlain
        fraction = at = at + 1
        while at < len(text) and text[at] in _DIGITS:
            at += 1
        if at == fraction or (at < len(text) and text[at] in "eE"):
            raise _NotPlain
        return float(text[start:at]), at
    return int(text[start:at]), at


def dumps(value: Any) -> str:
    """``json.dumps(value, indent=2, default=str)``."""
    try:
        return "".join(_encode(value, "\n"))
    except (_NotPlain, RecursionError):
        import json

        return json.dumps(value, indent=2, default=str)


def _encode(value: Any, newline: str) -> list[str]:
    # The order of json's own checks (json.encoder._make_iterencode), subclasses alike.
    if isinstance(value, str):
        return [_quote(value)]
    if value is None:
        return ["null"]
    if value is True:
        return ["true"]
    if value is False:
        return ["false"]
    if isinstance(value, int):
        return [int.__repr__(value)]
    if isinstance(value, float):
        return [_float(value)]
    if isinstance(value, list | tuple):
        if not value:
            return ["[]"]
        inner = newline + "  "
        parts = ["["]
        for number, item in enumerate(value):
            parts.append(inner if number == 0 else "," + inner)
            parts.extend(_encode(item, inner))
        parts.append(newline + "]")
        return parts
    if isinstance(value, dict):
        if not value:
            return ["{}"]
        inner = newline + "  "
        parts = ["{"]
        for number, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise _NotPlain
            parts.append(inner if number == 0 else "," + inner)
            parts.append(_quote(key) + ": ")
            parts.extend(_encode(item, inner))
        parts.append(newline + "}")
        return parts
    return [_quote(str(value))]


def _float(value: float) -> str:
    if value in (_INFINITY, -_INFINITY) or value != value:  # noqa: PLR0124 (NaN)
        return "Infinity" if value == _INFINITY else "-Infinity" if value < 0 else "NaN"
    return float.__repr__(value)


def _quote(text: str) -> str:
    """``text`` as a JSON string, escaped as ``json`` escapes it (ASCII only)."""
    text = str.__str__(text)
    if text.isascii() and text.isprintable():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    parts = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            parts.append(_SHORT_ESCAPES[char])
        elif 32 <= code < 127:
            parts.append(char)
        elif code < 0x10000:
            parts.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            parts.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
    parts.append('"')
    return "".join(parts)
