"""Provider kinds: option validation and adapter construction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Provider


class OptionError(Exception):
    """A kind-specific option is wrong; ``key`` names it, ``problem`` says what is expected."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def parse_options(kind: str, options: Mapping[str, Any]) -> object:
    """Validate the options of ``kind``."""
    return dict(options)


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
    """The adapter for ``kind``."""
    raise OptionError("kind", f"provider kind {kind!r} is not available yet")
