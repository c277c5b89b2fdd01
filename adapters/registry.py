"""Provider kinds: the one list of the kinds this version has, their options, their adapters.

``KINDS`` names every kind; the config accepts exactly these (``daemon.config``
derives its list from here). A kind's module (and httpx with it) is imported
only when its options are checked or its adapter built, so reading the config
stays cheap. Adding a kind: its module (with ``parse_options`` and ``build``),
a loader below, and one line in ``_LOADERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from dropsync.adapters.options import OptionError

if TYPE_CHECKING:
    from dropsync.adapters.base import Provider

__all__ = ["KINDS", "SECRET_REQUIRED", "OptionError", "build_provider", "parse_options"]


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


def build_provider(
    *,
    name: str,
    kind: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
) -> Provider:
    """The adapter for one configured provider."""
    module = _kind(kind)
    module.parse_options(options)
    return module.build(name, base_url, options, secret, timeout_s, batch_max_items)
