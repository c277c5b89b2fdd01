"""Removing secret values from every text an adapter lets out (errors, reasons, bodies).

A provider may echo what it was sent (a password, a bearer token) in an error body;
that body becomes an error message, a dead-letter reason, a log line. An adapter
keeps a ``Redactor`` of every secret value it holds and passes each text that leaves
it through ``Redactor.text`` (``Redactor.error`` rebuilds an error with clean texts).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from dropsync.adapters.errors import PermanentError, ProviderError

MASK = "[redacted]"
# Shorter values would mask ordinary words; a secret this short is refused at load.
MIN_SECRET = 4


class Redactor:
    """Masks a changing set of secret values (and their JSON- and URL-escaped forms)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._forms: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Mask ``secret`` from now on (a token learned at login, say)."""
        if not secret or len(secret) < MIN_SECRET:
            return
        forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
        # Longest first, so a form containing another is masked whole.
        self._forms = sorted(set(self._forms) | forms, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret form replaced by ``[redacted]``."""
        for form in self._forms:
            if form in value:
                value = value.replace(form, MASK)
        return value

    def contains(self, raw: bytes) -> bool:
        """True when ``raw`` holds a secret form (cheap: a byte search per form)."""
        return any(form.encode() in raw for form in self._forms)

    def error(self, exc: ProviderError) -> ProviderError:
        """A copy of ``exc`` whose message (and reason) carry no secret."""
        clean = copy.copy(exc)
        clean.args = tuple(self.text(a) if isinstance(a, str) else a for a in exc.args)
        if isinstance(clean, PermanentError):
            clean.reason = self.text(clean.reason)
        clean.__cause__ = None
        clean.__context__ = None
        clean.__traceback__ = None
        return clean
