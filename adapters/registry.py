"""Provider kinds: the one list of the kinds this version has, their options, their adapters.

``KINDS`` names every kind; the config accepts exactly these (``daemon.config``
derives its list from here). A kind's module (and httpx with it) is imported
only when its options are checked or its adapter built, so reading the config
stays cheap. Adding a kind: its module (with ``parse_options``, ``build``, ``secret_values``
and ``SECRET_IN_HEADERS``),
a loader below, and one line in ``_LOADERS``. Its adapter should also have the optional
``probe()`` (``adapters.base.Probes``: one request that checks the credentials and changes
nothing), which ``dropsync probe`` sends. Optional too: ``needs_secret(options)``,
``pushes(options)``, ``PATH_OPTIONS`` (see the functions of the same names below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from dropsync.adapters.options import OptionError

if TYPE_CHECKING:
    from dropsync.adapters.base import Provider

__all__ = [
    "KINDS",
    "SECRET_REQUIRED",
    "OptionError",
    "build_provider",
    "parse_options",
    "path_options",
    "pushes",
    "secret_in_headers",
    "secret_required",
    "secret_values",
]


class Kind(Protocol):
    """What a provider kind's module offers."""

    def parse_options(self, options: Mapping[str, Any]) -> object:
        """Validate the kind's own keys of ``[providers.NAME]`` (raises OptionError)."""

    def build(
        self,
        name: str,
        base_url: str,
        options: Mapping[str, Any],
        secret: str | None,
        timeout_s: float,
        batch_max_items: int | None,
    ) -> Provider:
        """The adapter of one configured provider of this kind."""

    def secret_values(self, secret: str | None) -> list[str]:
        """The values of the configured secret that travel in requests (a token, each user's
        token, a password): what is checked and redacted. Raises OptionError when the secret
        does not have the kind's shape (never quoting it)."""

    @property
    def SECRET_IN_HEADERS(self) -> bool:  # noqa: N802 -- a module constant
        """Whether those values travel in headers (so must be printable ASCII)."""


def _registrations() -> Kind:
    from dropsync.adapters import registrations

    return registrations


def _churn() -> Kind:
    from dropsync.adapters import churn

    return churn


def _crm() -> Kind:
    from dropsync.adapters import crm

    return crm


def _favourites() -> Kind:
    from dropsync.adapters import favourites

    return favourites


_LOADERS: dict[str, Callable[[], Kind]] = {
    "churn": _churn,
    "crm": _crm,
    "favourites": _favourites,
    "registrations": _registrations,
}

KINDS: tuple[str, ...] = tuple(sorted(_LOADERS))

# Kinds that cannot work without a secret: a config without one is refused at load.
SECRET_REQUIRED = {"registrations": "the provider's password"}


def _kind(kind: str) -> Kind:
    if kind not in _LOADERS:
        raise OptionError(
            "kind",
            f"provider kind {kind!r} is not available in this version "
            f"(available: {', '.join(KINDS)})",
        )
    return _LOADERS[kind]()


def parse_options(kind: str, options: Mapping[str, Any]) -> object:
    """Validate the options of ``kind`` (raises OptionError naming the key)."""
    return _kind(kind).parse_options(options)


def secret_required(kind: str, options: Mapping[str, Any]) -> str | None:
    """What the secret of a provider of ``kind`` holds, when it cannot work without one
    (a kind's optional ``needs_secret(options)`` decides from its options); else None."""
    if kind in SECRET_REQUIRED:
        return SECRET_REQUIRED[kind]
    needs = getattr(_kind(kind), "needs_secret", None)
    return None if needs is None else needs(options)


def pushes(kind: str, options: Mapping[str, Any]) -> bool:
    """Whether a provider of ``kind`` with these options sends what is routed to it (a
    kind's optional ``pushes(options)``; else True)."""
    decides = getattr(_kind(kind), "pushes", None)
    return True if decides is None else bool(decides(options))


def path_options(kind: str) -> tuple[str, ...]:
    """The options of ``kind`` that are paths (a kind's optional ``PATH_OPTIONS``): relative
    ones are resolved as every path of the config is."""
    return tuple(getattr(_kind(kind), "PATH_OPTIONS", ()))


def secret_values(kind: str, secret: str | None) -> list[str]:
    """The secret's values that go into requests (raises OptionError; never quotes them)."""
    return _kind(kind).secret_values(secret)


def secret_in_headers(kind: str) -> bool:
    """Whether ``kind`` sends its secret's values in headers (so they must be ASCII)."""
    return _kind(kind).SECRET_IN_HEADERS


def build_provider(
    *,
    name: str,
    kind: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
    also_secret: Iterable[str] = (),
) -> Provider:
    """The adapter for one configured provider.

    ``also_secret``: values of the provider's other secrets (a callback key, a webhook
    token that rides in a URL it sends), which the adapter must never say either.
    """
    from dropsync.adapters.http import HttpAdapter

    module = _kind(kind)
    module.parse_options(options)
    adapter = module.build(name, base_url, options, secret, timeout_s, batch_max_items)
    if isinstance(adapter, HttpAdapter):
        adapter.keep_secret(also_secret)
    return adapter
