"""Removing secret values from every text an adapter lets out (errors, reasons, bodies).

A provider may echo what it was sent (a token, a password) in an error body, a
header, a redirect's Location; that text becomes an error message, a dead-letter
reason, ``last_error``, a log line. An adapter keeps a ``Redactor`` of every secret
value it holds and passes each text that leaves it through it. Each secret is
looked for as sent, JSON-escaped, HTML-escaped, percent-encoded, and as a Python
str, bytes or bytearray repr quotes it (httpx's and h11's messages); a match
becomes ``[redacted]``.
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from .errors import PermanentError, ProviderError

MASK = "[redacted]"
# Shorter values would mask ordinary words; a secret this short is refused at load.
MIN_SECRET = 4


def spellings(secret: str) -> set[str]:
    """The ways ``secret`` can appear in a provider's answer or an exception's text."""
    encoded = secret.encode("utf-8", "backslashreplace")
    forms = {
        secret,
        json.dumps(secret)[1:-1],  # JSON, \\uXXXX for non-ASCII
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),  # JSON encoders that escape '/'
        html.escape(secret),
        html.escape(secret, quote=False),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        repr(secret)[1:-1],
        # b'...' and bytearray(b'...') in httpx/h11 errors (a bytearray escapes every quote)
        repr(encoded)[2:-1],
        repr(bytearray(encoded))[len("bytearray(b'") : -2],
        secret.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"'),
    }
    forms.discard("")
    return forms


class Redactor:
    """Masks a changing set of secret values, in every spelling of ``spellings``.

    Spellings are matched exactly (tokens are opaque; providers echo them verbatim).
    With few spellings each is looked for in turn; with many (a favourites provider
    with thousands of user tokens) one pass looks each position up by its first
    characters instead, so the cost does not grow with the number of secrets.
    """

    SCAN_ABOVE = 64  # spellings; above this, one indexed pass over the text

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.forms: tuple[str, ...] = ()
        self.longest = 0
        self._prefix = 0
        self._index: dict[str, list[str]] = {}
        self._add(secrets)

    def add(self, secret: str | None) -> None:
        """Mask ``secret`` from now on (a token learned at login, say)."""
        self._add([secret])

    def extend(self, secrets: Iterable[str | None]) -> None:
        """Mask each of ``secrets`` from now on (the index is made again once)."""
        self._add(secrets)

    def _add(self, secrets: Iterable[str | None]) -> None:
        forms = set(self.forms)
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET:
                forms |= spellings(secret)
        if len(forms) == len(self.forms):
            return
        # Longest first: a form that contains another is replaced whole.
        self.forms = tuple(sorted(forms, key=len, reverse=True))
        self.longest = len(self.forms[0])
        self._prefix = min(len(f) for f in self.forms)
        self._index = {}
        for form in self.forms:
            self._index.setdefault(form[: self._prefix], []).append(form)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def __call__(self, text: str, *, complete: bool = True) -> str:
        """``text`` without secrets; ``complete=False``: the text was cut, so its last
        characters may begin a secret and are dropped too."""
        if not self.forms:
            return text
        if not complete:
            text = text[: max(0, len(text) - self.longest)]
        if len(self.forms) <= self.SCAN_ABOVE:
            for form in self.forms:
                if form in text:
                    text = text.replace(form, MASK)
            return text
        return self._scan(text)

    def text(self, value: str) -> str:
        """``value`` with every secret form replaced by ``[redacted]``."""
        return self(value)

    def contains(self, raw: bytes) -> bool:
        """True when ``raw`` holds a secret form (cheap: a byte search per form)."""
        return any(form.encode() in raw for form in self.forms)

    def error(self, exc: ProviderError) -> ProviderError:
        """A copy of ``exc`` whose message (and reason) carry no secret, and no cause."""
        clean = copy.copy(exc)
        clean.args = tuple(self(a) if isinstance(a, str) else a for a in exc.args)
        if isinstance(clean, PermanentError):
            clean.reason = self(clean.reason)
        clean.__cause__ = None
        clean.__context__ = None
        clean.__traceback__ = None
        return clean

    def _scan(self, text: str) -> str:
        width, index = self._prefix, self._index
        parts: list[str] = []
        start = i = 0
        end = len(text) - width
        while i <= end:
            candidates = index.get(text[i : i + width])
            if candidates is not None:
                form = next((f for f in candidates if text.startswith(f, i)), None)
                if form is not None:
                    parts += (text[start:i], MASK)
                    i = start = i + len(form)
                    continue
            i += 1
        parts.append(text[start:])
        return "".join(parts)


def excerpt(text: str, redact: Redactor, *, limit: int, complete: bool = True) -> str:
    """A one-line, secret-free excerpt of at most ``limit`` characters.

    Redaction comes before the cut, so a cut can never leave half a secret behind;
    and again after whitespace is folded, which could otherwise join a secret's parts.
    """
    flat = redact(" ".join(redact(text, complete=complete).split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
