"""The numbered schema migrations shipped with this program (no database access here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from .errors import StoreError

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Migration(NamedTuple):
    """One numbered schema step."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """All migrations shipped with this program, in order."""
    found = []
    # The .sql files ship inside the package (see pyproject's package-data).
    for entry in (Path(__file__).parent / "migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise StoreError(f"migrations are not numbered 1..{len(found)}")
    return found


def latest_version() -> int:
    """The schema version this program writes."""
    return len(migrations())
