"""Campaign 5: bad rows through the SQL door, each followed by a good row.

Every bad row must end ``rejected`` with a reason a person can act on, the good row after it
``applied``, and the daemon must stay up. The row that ended the daemon in issue 9 item 4 goes
last, so it cannot hide what the others do.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.world import World, make_world
from tests.support import query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(300)]

NOW_MS = int(time.time() * 1000)
TS = NOW_MS - 86_400_000
TEN_MB_BODY = "'{\"v\": \"' || hex(zeroblob(5242880)) || '\"}'"
# (case, the row's columns as SQL expressions: collection, key, op, body, updated_at)
BAD_ROWS = [
    ("unknown op", "'contacts', 'r1@x', 'merge', '{}', 1"),
    ("NULL op", "'contacts', 'r2@x', NULL, '{}', 1"),
    ("NULL key", "'contacts', NULL, 'upsert', '{}', 1"),
    ("empty key", "'contacts', '', 'upsert', '{}', 1"),
    ("NULL collection", "NULL, 'r3@x', 'upsert', '{}', 1"),
    ("empty collection", "'', 'r4@x', 'upsert', '{}', 1"),
    ("body not JSON", "'contacts', 'r5@x', 'upsert', '{not json', 1"),
    ("body JSON null", "'contacts', 'r6@x', 'upsert', 'null', 1"),
    ("body an array", "'contacts', 'r7@x', 'upsert', '[1, 2]', 1"),
    ("body a string", "'contacts', 'r8@x', 'upsert', '\"hello\"', 1"),
    ("body a number", "'contacts', 'r9@x', 'upsert', '42', 1"),
    ("NULL body for an upsert", "'contacts', 'r10@x', 'upsert', NULL, 1"),
    ("a 10 MB body", "'contacts', 'r11@x', 'upsert', " + TEN_MB_BODY + ", 1"),
    ("timestamp as odd text", "'contacts', 'r12@x', 'upsert', '{}', 'next tuesday'"),
    ("timestamp month 13", "'contacts', 'r13@x', 'upsert', '{}', '2024-13-45T00:00:00Z'"),
    ("timestamp empty text", "'contacts', 'r14@x', 'upsert', '{}', ''"),
    ("timestamp NULL", "'contacts', 'r15@x', 'upsert', '{}', NULL"),
    ("timestamp negative", "'contacts', 'r16@x', 'upsert', '{}', -1"),
    ("timestamp far ahead", f"'contacts', 'r17@x', 'upsert', '{{}}', {NOW_MS + 365 * 86_400_000}"),
    ("timestamp a float", "'contacts', 'r18@x', 'upsert', '{}', 1.5"),
    ("body a 400-digit number", "'contacts', 'r19@x', 'upsert', '" + "9" * 400 + "', 1"),
    ("text that is not UTF-8", "'contacts', 'r20@x', 'upsert', CAST(X'7BFF7D' AS TEXT), 1"),
]  # fmt: skip
KNOWN: dict[str, pytest.MarkDecorator] = {}  # issue 9 items 3 and 4: fixed


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, seed: int) -> Iterator[dict[str, object]]:
    """Insert every bad row and a good row after each; wait; report each pair's statuses."""
    world: World = make_world(tmp_path_factory.mktemp("inbox"), seed)
    try:
        world.daemon.start()
        store: Path = world.store
        ids: dict[str, tuple[int, int]] = {}

        def processed() -> bool:
            world.revive()
            return query(store, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'") == [(0,)]

        # The last row (the one issue 9 item 4 is about) goes in once the others are done: a
        # daemon that dies on it takes the rows of its batch down with it.
        for group, wait_s in ((BAD_ROWS[:-1], 60), (BAD_ROWS[-1:], 10)):
            db = sqlite3.connect(store, timeout=30)
            for case, values in group:
                number = len(ids)
                with db:
                    bad = db.execute(
                        "INSERT INTO inbox (collection, key, op, body, updated_at) "
                        f"VALUES ({values})"
                    ).lastrowid
                    good = db.execute(
                        "INSERT INTO inbox (collection, key, op, body, updated_at) "
                        "VALUES ('contacts', ?, 'upsert', ?, ?)",
                        (f"good{number}@x", f'{{"email": "good{number}@x"}}', TS + number),
                    ).lastrowid
                assert bad is not None and good is not None
                ids[case] = (bad, good)
            db.close()
            with contextlib.suppress(AssertionError):  # each case says what is still pending
                wait_until(processed, timeout=wait_s, what="every inbox row processed")
        results: dict[str, object] = {}
        for case, (bad, good) in ids.items():
            rows = dict(
                (row[0], row[1:])
                for row in query(
                    store, "SELECT id, status, reason FROM inbox WHERE id IN (?, ?)", (bad, good)
                )
            )
            results[case] = (rows.get(bad), rows.get(good))
        world.check_alive()
        results["_exits"] = list(world.exits)
        yield results
    finally:
        world.close()


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=KNOWN.get(case, ())) for case, _ in BAD_ROWS]
)
def test_a_bad_row_is_rejected_with_a_reason_and_the_next_row_applied(
    outcomes: dict[str, object], case: str
) -> None:
    pair = outcomes[case]
    assert isinstance(pair, tuple)
    bad, good = pair
    assert bad is not None and bad[0] == "rejected" and bad[1], (case, bad)
    assert good is not None and good[0] == "applied", (case, good)


def test_the_daemon_stays_up(outcomes: dict[str, object]) -> None:
    assert outcomes["_exits"] == []
