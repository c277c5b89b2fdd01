"""Reading a provider kind's own config keys, with errors that name the key."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class OptionError(Exception):
    """A kind-specific option is wrong; ``key`` names it, ``problem`` says what is expected."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class OptionReader:
    """Typed access to the keys a provider kind adds to ``[providers.NAME]``."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options
        self.used: set[str] = set()

    def string(self, name: str, *, required: bool = False) -> str | None:
        """A non-empty string option."""
        self.used.add(name)
        value = self.options.get(name)
        if value is None:
            if required:
                raise OptionError(name, "missing; expected a non-empty string")
            return None
        if not isinstance(value, str) or not value:
            raise OptionError(name, "expected a non-empty string")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        """A true/false option."""
        self.used.add(name)
        value = self.options.get(name, default)
        if not isinstance(value, bool):
            raise OptionError(name, "expected true or false")
        return value

    def integer(self, name: str, default: int | None, *, minimum: int, maximum: int) -> int:
        """A whole number within ``minimum .. maximum`` (``default`` None: required)."""
        self.used.add(name)
        value = self.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise OptionError(
                name, f"expected a whole number from {_shown(minimum)} to {_shown(maximum)}"
            )
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """A finite number within ``minimum .. maximum``."""
        self.used.add(name)
        value = self.options.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not minimum <= value <= maximum
        ):
            raise OptionError(
                name, f"expected a number from {_shown(minimum)} to {_shown(maximum)}"
            )
        return float(value)

    def table(self, name: str) -> dict[str, Any]:
        """A sub-table (``name = { ... }`` or ``[providers.X.name]``); empty when absent."""
        self.used.add(name)
        value = self.options.get(name, {})
        if not isinstance(value, dict):
            raise OptionError(name, "expected a table")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        """A list of strings."""
        self.used.add(name)
        value = self.options.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise OptionError(name, "expected a list of strings")
        return tuple(value)

    def reject_unknown(self) -> None:
        """Refuse keys the kind does not know (typos would be silently ignored)."""
        for name in self.options:
            if name not in self.used:
                raise OptionError(name, "unknown key for this provider kind")


def _shown(number: float) -> str:
    """A range's end as a person reads it: ``1,048,576``, ``0.001``."""
    if isinstance(number, int) or number == int(number):
        return f"{int(number):,}"
    return f"{number:g}"
