"""Last-write-wins merge of changes into ``records``, and fan-out to the outbox.

The rule (documented in docs/schema.md): versions are ordered by the tuple
``(updated_at, deleted, digest, origin)`` and the greatest wins. So a newer
timestamp wins; at equal timestamps a delete beats an upsert; then the larger
digest of the canonical body; then the larger origin name. The order is total,
so any permutation of the same set of changes, with duplicates, leaves the same
``records``. Deletes keep a tombstone row, so an older upsert cannot resurrect
the key. Every change is logged in ``inbox`` with its outcome, which is what
``dropsync why`` reads.

The caller holds the write transaction. The functions here are synchronous and
take the ``sqlite3.Connection`` itself: the daemon runs a whole batch as one call
in the store's thread (``Store.transact``), one round trip per batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

import orjson

Version = tuple[int, int, str, str]  # (updated_at, deleted, digest, origin)
LOCAL_ORIGINS = ("sql", "drop")  # any other origin is a provider's


class Change(NamedTuple):
    """One normalised change, ready to merge.

    A winning change becomes a ``record_keys`` row (its fields but the body, in order,
    see ``_UPSERT_KEY``) and a ``record_bodies`` row (``_UPSERT_BODY``).
    """

    collection: str
    key: str
    body: str | None  # canonical JSON text
    ts: int  # epoch ms UTC
    deleted: bool
    origin: str  # 'drop', 'sql' or a provider name
    digest: str
    file_id: int | None = None
    doc_index: int | None = None
    inbox_id: int | None = None  # its inbox row, once it has one


@dataclass(slots=True)
class MergeResult:
    """What one ``apply_changes`` call did."""

    applied: int = 0
    unchanged: int = 0
    providers: set[str] = field(default_factory=set)  # providers with new outbox entries


IN_RECORDS = "records"  # an unlogged version whose only copy is its ``records`` row
# Where a current version that is not in the inbox log is described: a drop file's
# (file_id, doc_index), its ``records`` row (IN_RECORDS: a pulled first version), or the
# Change itself while it is still in the batch being merged. None: it is logged.
_Unlogged = tuple[int, int] | str | Change | None
_Stored = tuple[Version, _Unlogged]


def _version(change: Change) -> Version:
    return (change.ts, int(change.deleted), change.digest, change.origin)


def cut_at_nul(json_text: str) -> bool:
    """True if SQLite's JSON functions would cut a string of ``json_text`` short.

    ``json_each``'s ``value`` and ``->>`` end text at U+0000 (SQLite 3.40), so a JSON array
    that carries one (orjson writes it ``\\u0000``) is bound row by row instead. The doors
    refuse such keys (docs/schema.md, "Keys"); this keeps the store exact whatever reaches it.
    A literal backslash-u-0000 in a string also matches: it only costs the slower path.
    """
    return "\\u0000" in json_text


_VERSION_OF_KEY = (
    "SELECT key, updated_at, deleted, digest, origin, change_id, file_id, doc_index, body_id "
    "FROM record_keys WHERE collection = ? "
)


def digest_bytes(text: object) -> bytes | None:
    """The bytes a digest's lowercase hex text stands for (``record_keys.digest``); None
    for anything else (such a digest is stored as the text it is)."""
    if not isinstance(text, str):
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if raw.hex() == text else None


def _current_versions(
    db: sqlite3.Connection, keys: dict[str, set[str]], body_ids: dict[tuple[str, str], int]
) -> dict[tuple[str, str], _Stored | Change]:
    """The stored current version of each key of ``keys`` (key names by collection) that
    has one; fills ``body_ids``."""
    current: dict[tuple[str, str], _Stored | Change] = {}
    for collection, names in keys.items():
        listed = orjson.dumps(list(names)).decode()
        if cut_at_nul(listed):
            rows = [
                row
                for name in names
                for row in db.execute(_VERSION_OF_KEY + "AND key = ?", (collection, name))
            ]
        else:
            rows = db.execute(
                _VERSION_OF_KEY + "AND key IN (SELECT value FROM json_each(?))",
                (collection, listed),
            ).fetchall()
        for key, updated_at, deleted, stored, origin, change_id, file_id, doc_index, body in rows:
            unlogged: _Unlogged = None
            if change_id is None:
                unlogged = IN_RECORDS if file_id is None else (file_id, doc_index)
            if type(updated_at) is int and type(deleted) is int and type(stored) is bytes:
                version = (updated_at, deleted, stored.hex(), origin)  # the daemon's own rows
            else:
                version = _stored_version(updated_at, deleted, stored, origin)
            current[(collection, key)] = (version, unlogged)
            body_ids[(collection, key)] = body
    return current


LARGEST_ID = 2**63 - 1  # SQLite's largest rowid; the smallest is -LARGEST_ID - 1


def _free_ids(db: sqlite3.Connection, table: str, need: int) -> int:
    """The first of ``need`` consecutive ids no row of ``table`` (``inbox`` or
    ``record_bodies``) has: after the largest id.

    Other programs choose ids too (docs/schema.md, "inbox"): one may hold an id so near
    SQLite's largest that no ``need`` ids follow it. Then the ids before the smallest are
    taken, and failing those, the first gap wide enough (found by a scan of the ids).
    """
    # One aggregate a statement: SQLite reads MAX(id) off the b-tree's end, not the table.
    (high,) = db.execute(f"SELECT MAX(id) FROM {table}").fetchone()
    if high is None:
        return 1
    if high <= LARGEST_ID - need:
        return int(high) + 1
    (low,) = db.execute(f"SELECT MIN(id) FROM {table}").fetchone()
    if low - need >= -LARGEST_ID - 1:
        return int(low) - need
    row = db.execute(
        f"SELECT id + 1 FROM {table} AS a WHERE id < :last AND NOT EXISTS "
        f"(SELECT 1 FROM {table} AS b WHERE b.id > a.id AND b.id <= a.id + :need) "
        "ORDER BY id LIMIT 1",
        {"need": need, "last": LARGEST_ID - need},
    ).fetchone()
    if row is None:
        raise sqlite3.DataError(f"{table} has no {need} free ids in a row")
    return int(row[0])


# Below every version a change can have (its time is from 1970 on).
_UNUSABLE: Version = (-1, 0, "", "")


def _stored_version(updated_at: object, deleted: object, digest: object, origin: object) -> Version:
    """A ``record_keys`` row's version, to compare with changes' (``_version``).

    The tie-break compares the digest's hex text, as the records view shows it; a digest of
    another type (``INSERT INTO records`` by hand keeps what it is given) as its text. A
    time or delete flag that is not a number (ISO text written by hand) orders the version
    below every change: the next one displaces it.
    """
    if not isinstance(updated_at, int | float) or not isinstance(deleted, int | float):
        return _UNUSABLE
    text = digest.hex() if isinstance(digest, bytes) else digest
    return (updated_at, deleted, str(text), str(origin))  # type: ignore[return-value]


def _next_inbox_id(db: sqlite3.Connection, need: int) -> int:
    return _free_ids(db, "inbox", need)


def _next_body_id(db: sqlite3.Connection, need: int) -> int:
    return _free_ids(db, "record_bodies", need)


_INSERT_INBOX = (
    "INSERT INTO inbox (id, collection, key, op, body, updated_at, origin, file_id, doc_index, "
    "received_at, status, digest, ts, processed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Parameters: a Change's fields but the body (its digest as bytes), then its body_id;
# merged_at is the batch's time. The body_id of a key never changes. file_id, doc_index and
# change_id are placeholders or NULL (see ``_upsert_key``).
_UPSERT_KEY = (
    "INSERT INTO record_keys (collection, key, updated_at, deleted, origin, digest, file_id, "
    "doc_index, change_id, body_id, merged_at) "
    "VALUES (?, ?, ?, ?, ?, ?, {file_id}, {doc_index}, {change_id}, ?, {now}) "
    "ON CONFLICT (collection, key) DO UPDATE SET updated_at = excluded.updated_at, "
    "deleted = excluded.deleted, origin = excluded.origin, digest = excluded.digest, "
    "change_id = excluded.change_id, file_id = excluded.file_id, "
    "doc_index = excluded.doc_index, merged_at = excluded.merged_at"
)
_UPSERT_BODY = (
    "INSERT INTO record_bodies (id, body) VALUES (?, ?) "
    "ON CONFLICT (id) DO UPDATE SET body = excluded.body"
)

# Which of (file_id, doc_index, change_id) a row has: a drop file's first version has the
# first two, a logged change the last (and a file's position when it came from one).
_Shape = tuple[bool, bool, bool]


def _upsert_key(shape: _Shape, now: int) -> str:
    """``_UPSERT_KEY`` with NULL written in for the columns a row of ``shape`` has not.

    Binding None (like bytes and bool) costs the sqlite3 module a lookup for an adapter,
    about a third of a microsecond each: a literal NULL costs nothing a row.
    """
    file_id, doc_index, change_id = ("?" if present else "NULL" for present in shape)
    return _UPSERT_KEY.format(
        file_id=file_id, doc_index=doc_index, change_id=change_id, now=int(now)
    )


def _write_records(
    db: sqlite3.Connection,
    winners: Sequence[Change],
    body_ids: dict[tuple[str, str], int],
    now: int,
) -> None:
    """Write each winner (in order: the last of a key stays) to ``record_keys`` and
    ``record_bodies``. A key seen for the first time gets the next body id (ids grow in
    the order of arrival, so the bodies table is appended to).

    The rows are bound as the sqlite3 module binds fastest (see ``_upsert_key``): the
    digest as a bytearray (stored as the same BLOB as bytes), ``deleted`` as an int, and
    one statement per shape of the rows. Should a batch hold rows of more than one shape,
    only the last winner of each key is written, so that no statement's rows overtake
    another's: the upsert leaves a key's row as its last winner has it either way.
    """
    bodies: list[tuple[int, str | None]] = []
    rows = _key_rows(winners, body_ids, _next_body_id(db, len(winners)), bodies)
    if len(rows) > 1:
        last = {(c.collection, c.key): c for c in winners}
        rows = _key_rows(list(last.values()), body_ids, 0, None)
    db.executemany(_UPSERT_BODY, bodies)
    for shape, params in rows.items():
        db.executemany(_upsert_key(shape, now), params)


_FILE_ROW: _Shape = (True, True, False)  # a drop file's version, not logged: the bulk case


def _stored_digest(digest: object) -> object:
    """``digest`` as ``record_keys`` keeps it: lowercase hex as its bytes (``digest_bytes``),
    as a bytearray (bound faster than bytes); anything else as it is."""
    if type(digest) is str:
        try:
            raw = bytearray.fromhex(digest)
        except ValueError:
            return digest
        if raw.hex() == digest:
            return raw
    return digest


def _stored_digests(digests: list[str]) -> list[object]:
    """``_stored_digest`` of each, converted together when all are lowercase hex of one
    length (every digest dropsync computes): one ``fromhex`` for the whole batch."""
    lengths = set(map(len, digests))
    if len(lengths) == 1:
        size = lengths.pop()
        try:
            joined = "".join(digests)
            raw = bytearray.fromhex(joined)
        except (TypeError, ValueError):
            pass
        else:
            if size and size % 2 == 0 and raw.hex() == joined:
                step = size // 2
                return [raw[at : at + step] for at in range(0, len(raw), step)]
    return [_stored_digest(digest) for digest in digests]


def _key_rows(
    winners: Sequence[Change],
    body_ids: dict[tuple[str, str], int],
    next_id: int,
    bodies: list[tuple[int, str | None]] | None,
) -> dict[_Shape, list[tuple[object, ...]]]:
    """The ``_upsert_key`` parameters of ``winners``, by shape, each list in order.

    A key not in ``body_ids`` gets ``next_id`` (then the next); ``bodies`` (if given)
    receives each winner's ``_UPSERT_BODY`` parameters, in order.
    """
    rows: dict[_Shape, list[tuple[object, ...]]] = {}
    for change in winners:
        collection, key, body, ts, deleted, origin, digest, file_id, doc_index, inbox_id = change
        ident = (collection, key)
        body_id = body_ids.get(ident)
        if body_id is None:
            body_id = body_ids[ident] = next_id
            next_id += 1
        if bodies is not None:
            bodies.append((body_id, body))
        stored = _stored_digest(digest)
        if inbox_id is None and file_id is not None and doc_index is not None:
            shape = _FILE_ROW
            row: tuple[object, ...] = (
                collection, key, ts, 1 if deleted else 0, origin, stored, file_id, doc_index,
                body_id,
            )  # fmt: skip
        else:
            shape = (file_id is not None, doc_index is not None, inbox_id is not None)
            present = tuple(v for v in (file_id, doc_index, inbox_id) if v is not None)
            row = (collection, key, ts, 1 if deleted else 0, origin, stored, *present, body_id)
        same = rows.get(shape)
        if same is None:
            same = rows[shape] = []
        same.append(row)
    return rows


def _log_row(change: Change, row_id: int, status: str, now: int) -> tuple[object, ...]:
    return (
        row_id,
        change.collection,
        change.key,
        "delete" if change.deleted else "upsert",
        None if change.file_id is not None else change.body,
        change.ts,
        change.origin,
        change.file_id,
        change.doc_index,
        now,
        status,
        change.digest,
        change.ts,
        now,
    )


def _displaced_file_row(
    change: Change, best: Version, unlogged: tuple[int, int], row_id: int, now: int
) -> tuple[object, ...]:
    """The log row of a drop file's version (stored in ``records``) that ``change`` displaces."""
    return (
        row_id,
        change.collection,
        change.key,
        "delete" if best[1] else "upsert",
        None,
        best[0],
        best[3],
        unlogged[0],
        unlogged[1],
        now,
        "superseded",
        best[2],
        best[0],
        now,
    )


def _keep_bodies_of_removed_files(
    db: sqlite3.Connection, displaced: Sequence[tuple[int, int, str, str]]
) -> None:
    """Copy the body from ``records`` into the log rows of displaced drop-file versions
    whose file retention removed (``files.removed_at``): the file can no longer give it.

    ``displaced`` is (inbox id, file id, collection, key); run before the records upsert
    overwrites the bodies. One query finds the removed files among those the batch names.
    """
    file_ids = sorted({file_id for _, file_id, _, _ in displaced})
    removed = {
        int(row[0])
        for row in db.execute(
            "SELECT id FROM files WHERE removed_at IS NOT NULL "
            "AND id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(file_ids).decode(),),
        )
    }
    if not removed:
        return
    db.executemany(
        "UPDATE inbox SET body = (SELECT r.body FROM records r WHERE r.collection = ? "
        "AND r.key = ?) WHERE id = ?",
        [
            (collection, key, row_id)
            for row_id, file_id, collection, key in displaced
            if file_id in removed
        ],
    )


# The current versions of (inbox id, collection, key) as superseded log rows, received when
# they were merged; parameters: the time the merge processes them, a JSON array.
_COPY_RECORDS_TO_INBOX = (
    "INSERT INTO inbox (id, collection, key, op, body, updated_at, origin, file_id, doc_index, "
    "received_at, status, digest, ts, processed_at) "
    "SELECT c.value ->> 0, r.collection, r.key, "
    "CASE WHEN r.deleted THEN 'delete' ELSE 'upsert' END, r.body, r.updated_at, r.origin, "
    "NULL, NULL, r.merged_at, 'superseded', r.digest, r.updated_at, ? "
    "FROM json_each(?) AS c CROSS JOIN records AS r "
    "WHERE r.collection = c.value ->> 1 AND r.key = c.value ->> 2"
)
# The same for one (inbox id, time, collection, key), bound (see ``cut_at_nul``).
_COPY_RECORD_TO_INBOX = (
    "INSERT INTO inbox (id, collection, key, op, body, updated_at, origin, file_id, doc_index, "
    "received_at, status, digest, ts, processed_at) "
    "SELECT ?, r.collection, r.key, "
    "CASE WHEN r.deleted THEN 'delete' ELSE 'upsert' END, r.body, r.updated_at, r.origin, "
    "NULL, NULL, r.merged_at, 'superseded', r.digest, r.updated_at, ? "
    "FROM records AS r WHERE r.collection = ? AND r.key = ?"
)


def _logged(db: sqlite3.Connection, change: Change) -> bool:
    """True if the inbox already lists this very version of the key from the same origin."""
    row = db.execute(
        "SELECT 1 FROM inbox WHERE collection = ? AND key = ? AND origin = ? AND ts = ? "
        "AND digest = ? AND op = ? LIMIT 1",
        (
            change.collection,
            change.key,
            change.origin,
            change.ts,
            change.digest,
            "delete" if change.deleted else "upsert",
        ),
    ).fetchone()
    return row is not None


def apply_changes(
    db: sqlite3.Connection,
    changes: Sequence[Change],
    routes: Mapping[str, Sequence[str]],
    *,
    now: int,
) -> MergeResult:
    """Merge ``changes`` (in order) into ``records``; log them in ``inbox``; fill the outbox.

    Must run inside a write transaction. A change that becomes the current
    version is queued for every provider routed for its collection except
    the one it came from.

    The first version of a key, when it comes from a drop file or a pull, is not
    copied into the inbox log: its ``records`` row describes it (a drop file's row
    names its file and index; a pulled one holds the body). It is logged (as
    ``superseded``) when a later version displaces it, so the log plus the
    ``records`` rows with no ``change_id`` always hold every version seen; bulk
    first loads and first pulls stay lean.
    """
    result = MergeResult()
    if not changes:
        return result
    body_ids: dict[tuple[str, str], int] = {}
    keys = _keys_by_collection(changes)
    current = _current_versions(db, keys, body_ids)
    if not current and _first_versions_only(changes, keys):
        _write_first_versions(db, changes, now)
        result.applied = len(changes)
        _fan_out(db, changes, routes, now, result)
        return result
    winners: list[Change] = []
    fresh: list[Change] = []  # winners with new content: these go to the outbox
    new_rows: list[tuple[object, ...]] = []
    copied: list[tuple[int, str, str]] = []  # (inbox id, collection, key): log the records row
    displaced: list[tuple[int, int, str, str]] = []  # (inbox id, file id, collection, key)
    updated_rows: list[tuple[object, ...]] = []
    next_id = _next_inbox_id(db, 2 * len(changes))  # a displaced version and the change
    applied = 0
    for change in changes:
        ident = (change.collection, change.key)
        entry = current.get(ident)
        if (
            entry is None
            and change.inbox_id is None
            and (change.file_id is not None or change.origin not in LOCAL_ORIGINS)
        ):
            # The bulk case: a key seen for the first time, from a drop file or a pull.
            current[ident] = change
            winners.append(change)
            fresh.append(change)
            applied += 1
            continue
        version = _version(change)
        unlogged: _Unlogged
        if entry is None:
            best, unlogged = None, None
        elif isinstance(entry, Change):
            best = _version(entry)
            unlogged = entry if entry.inbox_id is None else None
        else:
            best, unlogged = entry
        won = best is None or version > best
        if won:
            status = "applied" if best is None or best[:3] != version[:3] else "duplicate"
            if best is not None and unlogged is not None:
                # The version being displaced was never logged: log it now.
                if isinstance(unlogged, Change):
                    new_rows.append(_log_row(unlogged, next_id, "superseded", now))
                elif isinstance(unlogged, tuple):
                    new_rows.append(_displaced_file_row(change, best, unlogged, next_id, now))
                    displaced.append((next_id, unlogged[0], change.collection, change.key))
                else:
                    copied.append((next_id, change.collection, change.key))
                next_id += 1
        else:
            status = "duplicate" if version == best else "superseded"
        # A pull that brought nothing new (the provider answers with what it has, every time):
        # the version is the current one or already in the log; log nothing.
        if (
            not won
            and change.inbox_id is None
            and change.file_id is None
            and (version == best or _logged(db, change))
        ):
            continue
        logged = change
        if change.inbox_id is None:
            new_rows.append(_log_row(change, next_id, status, now))
            logged = change._replace(inbox_id=next_id)
            next_id += 1
        else:
            updated_rows.append((change.inbox_id, status, change.digest, change.ts))
        if won:
            current[ident] = logged
            winners.append(logged)
        if status == "applied":
            fresh.append(logged)
            applied += 1
    result.applied = applied
    result.unchanged = len(changes) - applied
    if new_rows:
        db.executemany(_INSERT_INBOX, new_rows)
    if displaced:
        _keep_bodies_of_removed_files(db, displaced)
    if copied:
        # Before the records upsert below overwrites them.
        listed = orjson.dumps(copied).decode()
        if cut_at_nul(listed):
            db.executemany(_COPY_RECORD_TO_INBOX, [(i, now, c, k) for i, c, k in copied])
        else:
            db.execute(_COPY_RECORDS_TO_INBOX, (now, listed))
    if updated_rows:
        # One statement for the whole batch (a JSON array): far cheaper than a bound row each.
        db.execute(
            "UPDATE inbox SET status = u.value ->> 1, reason = NULL, digest = u.value ->> 2, "
            "ts = u.value ->> 3, processed_at = ? FROM json_each(?) AS u "
            "WHERE inbox.id = u.value ->> 0",
            (now, orjson.dumps(updated_rows).decode()),
        )
    if winners:
        _write_records(db, winners, body_ids, now)
        _fan_out(db, fresh, routes, now, result)
    return result


# A Change's fields by position, for the batch-wide passes below (map and zip over
# itemgetter run in C: a bulk batch's thousands of rows are never looped over in Python).
_COLLECTION, _KEY, _BODY, _TS, _DELETED, _ORIGIN, _DIGEST, _FILE_ID, _DOC_INDEX, _INBOX_ID = (
    itemgetter(position) for position in range(len(Change._fields))
)


def _keys_by_collection(changes: Sequence[Change]) -> dict[str, set[str]]:
    """The distinct keys ``changes`` touch, by collection."""
    collections = set(map(_COLLECTION, changes))
    if len(collections) == 1:
        return {collections.pop(): set(map(_KEY, changes))}
    keys: dict[str, set[str]] = {}
    for change in changes:
        keys.setdefault(change.collection, set()).add(change.key)
    return keys


def _first_versions_only(changes: Sequence[Change], keys: dict[str, set[str]]) -> bool:
    """True if ``changes`` (none of whose keys has a stored version) are first versions
    from drop files, no key twice: a bulk load's batch, which ``_write_first_versions``
    merges (each wins; there is nothing to compare)."""
    return (
        sum(map(len, keys.values())) == len(changes)
        and set(map(_INBOX_ID, changes)) == {None}
        and None not in set(map(_FILE_ID, changes))
        and None not in set(map(_DOC_INDEX, changes))
    )


def _write_first_versions(db: sqlite3.Connection, changes: Sequence[Change], now: int) -> None:
    """``_write_records`` of first versions only (``_first_versions_only``): each wins, gets
    the next body id and is not logged; the rows are zipped from the changes' columns in C,
    not built one by one (a property test holds the two to the same tables)."""
    first = _next_body_id(db, len(changes))
    ids = range(first, first + len(changes))
    digests = _stored_digests([change.digest for change in changes])
    db.executemany(_UPSERT_BODY, zip(ids, map(_BODY, changes), strict=True))
    columns = (_COLLECTION, _KEY, _TS)
    db.executemany(
        _upsert_key(_FILE_ROW, now),
        zip(
            *(map(column, changes) for column in columns),
            map(int, map(_DELETED, changes)),  # an int binds faster than a bool
            map(_ORIGIN, changes),
            digests,
            map(_FILE_ID, changes),
            map(_DOC_INDEX, changes),
            ids,
            strict=True,
        ),
    )


def _fan_out(
    db: sqlite3.Connection,
    winners: Sequence[Change],
    routes: Mapping[str, Sequence[str]],
    now: int,
    result: MergeResult,
) -> None:
    """Queue each new version for every routed provider except its origin (coalescing).

    One statement per (collection, provider), its keys and versions passed as one JSON
    array: SQLite unpacks it far faster than binding a parameter tuple per row.
    """
    queued = _queued(winners, routes)
    for (collection, provider), versions in queued.items():
        listed = orjson.dumps(versions).decode()
        if cut_at_nul(listed):
            db.executemany(
                "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?) " + _QUEUE_CONFLICT,
                [(provider, collection, key, ts, now) for key, ts in versions],
            )
        else:
            db.execute(
                "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at) "
                "SELECT ?, ?, value ->> 0, value ->> 1, ? FROM json_each(?) WHERE 1 "
                + _QUEUE_CONFLICT,
                (provider, collection, now, listed),
            )
        result.providers.add(provider)


def _queued(
    winners: Sequence[Change], routes: Mapping[str, Sequence[str]]
) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(key, version) of each winner to queue, by (collection, provider), each list in
    order; the pairs in the order of their first entry in ``winners``."""
    collection = winners[0].collection if winners else ""
    if len(set(map(_COLLECTION, winners))) > 1:
        queued: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for change in winners:
            for provider in routes.get(change.collection, ()):
                if provider != change.origin:
                    queued.setdefault((change.collection, provider), []).append(
                        (change.key, change.ts)
                    )
        return queued
    # One collection (a drop file's batch, most inbox batches): a list per provider at once.
    pairs = []
    origins = set(map(_ORIGIN, winners))
    for provider in routes.get(collection, ()):
        if provider not in origins:  # each winner (a bulk load's: from drop files)
            pairs.append(
                (0, provider, list(zip(map(_KEY, winners), map(_TS, winners), strict=True)))
            )
            continue
        versions = [(c.key, c.ts) for c in winners if c.origin != provider]
        if versions:
            first = next(i for i, c in enumerate(winners) if c.origin != provider)
            pairs.append((first, provider, versions))
    pairs.sort(key=lambda pair: pair[0])  # stable: providers' order at the same first entry
    return {(collection, provider): versions for _, provider, versions in pairs}


_QUEUE_CONFLICT = (
    "ON CONFLICT (provider, collection, key) DO UPDATE SET updated_at = excluded.updated_at"
)


def _as_bytes(column: str) -> str:
    # Text as its stored bytes: Python would raise decoding text that is not UTF-8.
    return f"CASE WHEN typeof({column}) = 'text' THEN CAST({column} AS BLOB) ELSE {column} END"


def _capped(column: str) -> str:
    # A text column (TEXT affinity: never an integer) longer than the limit as its length.
    length = f"length(CAST({column} AS BLOB))"
    return f"CASE WHEN {length} > :max_body THEN {length} ELSE {_as_bytes(column)} END"


MAX_TIME_BYTES = 4096  # of an updated_at read as text: an ISO-8601 time is far shorter
_PENDING_INBOX = (
    f"SELECT id, {_capped('collection')}, {_capped('key')}, {_capped('op')}, "
    f"{_capped('body')}, CASE WHEN typeof(updated_at) IN ('text', 'blob') "
    f"THEN substr(CAST(updated_at AS BLOB), 1, {MAX_TIME_BYTES + 1}) ELSE updated_at END "
    "FROM inbox WHERE status = 'pending' ORDER BY id LIMIT :limit"
)


def pending_inbox(
    db: sqlite3.Connection, limit: int, *, max_body_bytes: int, max_total_bytes: int
) -> tuple[list[tuple[object, ...]], bool]:
    """The oldest unprocessed inbox rows ``(id, collection, key, op, body, updated_at)``,
    and whether more may be pending.

    Text columns come as their stored bytes, undecoded (another program may have
    written text that is not UTF-8; the caller rejects such a row, it is no error
    here). A collection, key, op or body longer than ``max_body_bytes`` comes as its
    length (an integer, which a column of TEXT affinity never holds), so it is never
    read into memory; an ``updated_at`` text as its first ``MAX_TIME_BYTES`` + 1 bytes.
    Rows stop at ``limit``, or once what they hold reaches ``max_total_bytes``.
    """
    cursor = db.execute(_PENDING_INBOX, {"max_body": max_body_bytes, "limit": limit})
    rows: list[tuple[object, ...]] = []
    total = 0
    for row in cursor:
        rows.append(tuple(row))
        total += sum(len(value) for value in row[1:] if isinstance(value, bytes))
        if total >= max_total_bytes:
            cursor.close()
            return rows, True
    return rows, len(rows) == limit


def reject_inbox_rows(
    db: sqlite3.Connection, rejected: Sequence[tuple[int, str]], *, now: int
) -> None:
    """Mark inbox rows as rejected, each with its reason."""
    db.executemany(
        "UPDATE inbox SET status = 'rejected', reason = ?, processed_at = ? WHERE id = ?",
        [(reason, now, row_id) for row_id, reason in rejected],
    )


def inbox_triggers(db: sqlite3.Connection) -> list[str]:
    """The names of the triggers on ``inbox``: other programs' (dropsync makes none)."""
    return [
        str(row[0])
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'inbox' "
            "ORDER BY name"
        )
    ]


def data_version(db: sqlite3.Connection) -> int:
    """``PRAGMA data_version``: changes when another connection commits."""
    row = db.execute("PRAGMA data_version").fetchone()
    return int(row[0]) if row else 0
