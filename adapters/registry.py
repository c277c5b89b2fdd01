"""Provider kinds: option validation and adapter construction, by kind name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dropsync.adapters import churn, crm, favourites, registrations
from dropsync.adapters.base import Provider
from dropsync.adapters.options import OptionError

__all__ = ["KINDS", "SECRET_REQUIRED", "OptionError", "build_provider", "parse_options"]

Builder = Callable[[str, str, Mapping[str, Any], "str | None", float, "int | None"], Provider]

KINDS: dict[str, tuple[Callable[[Mapping[str, Any]], object], Builder]] = {
    "churn": (churn.parse_options, churn.build),
    "crm": (crm.parse_options, crm.build),
    "favourites": (favourites.parse_options, favourites.build),
    "registrations": (registrations.parse_options, registrations.build),
}

# Kinds that cannot work without a secret: a config without one is refused at load.
SECRET_REQUIRED = {"registrations": "the provider's password"}


def parse_options(kind: str, options: Mapping[str, Any]) -> object:
    """Validate the options of ``kind`` (raises OptionError naming the key)."""
    if kind not in KINDS:
        raise OptionError(
            "kind",
            f"provider kind {kind!r} is not available in this version "
            f"(available: {', '.join(sorted(KINDS))})",
        )
    return KINDS[kind][0](options)


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
    parse_options(kind, options)
    return KINDS[kind][1](name, base_url, options, secret, timeout_s, batch_max_items)
