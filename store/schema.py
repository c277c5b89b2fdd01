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
    return [
        Migration(version, name, path.read_text(encoding="utf-8"))
        for version, name, path in _numbered()
    ]


def _numbered() -> list[tuple[int, str, Path]]:
    """(version, name, file) of each migration, in order; StoreError if one is missing."""
    found = []
    # The .sql files ship inside the package (see pyproject's package-data).
    for entry in (Path(__file__).parent / "migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match[1]), match[2], entry))
    found.sort(key=lambda m: m[0])
    expected = list(range(1, len(found) + 1))
    if [m[0] for m in found] != expected:
        raise StoreError(f"migrations are not numbered 1..{len(found)}")
    return found


def latest_version() -> int:
    """The schema version this program writes (``status`` asks: the files are not read)."""
    return len(_numbered())
