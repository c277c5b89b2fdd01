"""The numbered schema migrations shipped with this program (no database access here)."""

from __future__ import annotations

import os

_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def migration_name(entry: str) -> tuple[int, str] | None:
    """(number, name) of a migration file called ``NNNN_name.sql`` (name: ``[a-z0-9_]+``),
    else None. String methods, not ``re``: status asks (``latest_version``), and importing
    ``re`` costs it several milliseconds."""
    number, name = entry[:4], entry[5:-4]
    if (
        len(entry) > 9
        and entry.endswith(".sql")
        and entry[4] == "_"
        and number.isascii()
        and number.isdigit()
        and _NAME_CHARACTERS.issuperset(name)
    ):
        return int(number), name
    return None


class Migration:
    """One numbered schema step.

    A plain class, not a NamedTuple: ``dropsync status`` imports this module (for
    ``latest_version``), and typing would cost it more than its queries do.
    """

    __slots__ = ("name", "sql", "version")

    def __init__(self, version: int, name: str, sql: str) -> None:
        self.version = version
        self.name = name
        self.sql = sql


def migrations() -> list[Migration]:
    """All migrations shipped with this program, in order."""
    found = []
    for version, name, path in _numbered():
        with open(path, encoding="utf-8") as handle:
            found.append(Migration(version, name, handle.read()))
    return found


def _numbered() -> list[tuple[int, str, str]]:
    """(version, name, file) of each migration, in order; StoreError if one is missing."""
    found = []
    # The .sql files ship inside the package (see pyproject's package-data).
    folder = os.path.join(os.path.dirname(__file__), "migrations")
    for entry in os.listdir(folder):  # os, not pathlib: status asks (``latest_version``)
        named = migration_name(entry)
        if named:
            found.append((*named, os.path.join(folder, entry)))
    found.sort(key=lambda m: m[0])
    expected = list(range(1, len(found) + 1))
    if [m[0] for m in found] != expected:
        from .errors import StoreError  # here: status asks, and its way imports no error

        raise StoreError(f"migrations are not numbered 1..{len(found)}")
    return found


# The number of the last migration file; ``tests/store/test_schema.py`` holds the two
# together. A constant: ``status`` asks on every run, and listing the folder costs it more.
LATEST_VERSION = 12


def latest_version() -> int:
    """The schema version this program writes (``status`` asks: the folder is not read)."""
    return LATEST_VERSION
