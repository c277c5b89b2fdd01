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


def version_in_use(
    user_version: int, listed: list[tuple[int, str]], shipped: list[tuple[int, str]]
) -> int:
    """The schema version of a store: its ``PRAGMA user_version``, unless another program
    set that to a value of its own (docs/schema.md, "Versioning").

    ``listed`` is what ``schema_migrations`` lists (version, name), ``shipped`` this
    program's migrations. When the listing is this program's first migrations in order,
    it is the version where ``user_version`` is lower (those migrations were applied: their
    tables exist) or past every shipped migration (a newer dropsync lists its own too).
    A listing shorter than ``user_version`` (rows deleted by hand) changes nothing.
    """
    listed = sorted(listed)
    recorded = len(listed)
    if not listed or listed != shipped[:recorded]:
        return user_version
    if recorded > user_version or user_version > len(shipped):
        return recorded
    return user_version


# The number of the last migration file; ``tests/store/test_schema.py`` holds the two
# together. A constant: ``status`` asks on every run, and listing the folder costs it more.
LATEST_VERSION = 12


def latest_version() -> int:
    """The schema version this program writes (``status`` asks: the folder is not read)."""
    return LATEST_VERSION
