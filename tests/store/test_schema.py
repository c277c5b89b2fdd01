"""The migration files' names, read without ``re`` (``status`` asks ``latest_version``)."""

from __future__ import annotations

import os
import re

from dropsync.store.schema import latest_version, migration_name, migrations
from hypothesis import example, given
from hypothesis import strategies as st

# The rule as a regular expression (ASCII digits: "NNNN" is a number a person types).
NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql", re.ASCII)


@given(
    st.one_of(
        st.text(max_size=20),
        st.builds(
            "{}_{}{}".format,
            st.text("0123456789١a", min_size=3, max_size=5),
            st.text("abz09_-A.\n", max_size=6),
            st.sampled_from([".sql", ".SQL", ".sql\n", ".sq", ""]),
        ),
    )
)
@example("0001_core.sql")
@example("0001_.sql")
@example("0001_core.sql\n")  # the old pattern's $ let a trailing newline through
@example("١٢٣٤_core.sql")  # Arabic-Indic digits: \d without re.ASCII took them
@example("00001_core.sql")
def test_a_migration_name_is_read_as_the_rule_reads_it(entry: str) -> None:
    match = NAME.fullmatch(entry)
    assert migration_name(entry) == ((int(match[1]), match[2]) if match else None)


def test_the_shipped_migrations_are_all_read_in_order() -> None:
    folder = os.path.join(os.path.dirname(migrations.__code__.co_filename), "migrations")
    sql_files = sorted(name for name in os.listdir(folder) if name.endswith(".sql"))
    assert [m.version for m in migrations()] == list(range(1, len(sql_files) + 1))
    assert latest_version() == len(sql_files)
    assert [f"{m.version:04d}_{m.name}.sql" for m in migrations()] == sql_files
