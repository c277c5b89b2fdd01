"""The conservation oracle: what must hold after anything the campaigns do.

``durable_now`` may run at any moment the daemon is down (after each kill); ``settled`` runs
once everything is quiet (no file waiting, no inbox row pending, every outbox empty). Each check
returns ``Violation`` values, named by invariant, so a campaign can report them all at once and
a test can hold each invariant on its own.

Invariants:

* ``integrity``: ``PRAGMA integrity_check`` is ok; the running counts kept by triggers
  (``outbox_pending``, ``files_by_status``) equal the rows they count.
* ``durable``: every acknowledged change (its file filed away, its inbox row processed) is in
  ``records`` as the winner or beaten by a newer acknowledged version; ``records`` holds no
  version the load never made (nothing invented, no number changed).
* ``winners``: once settled, each key's record is exactly its newest version.
* ``files_once``: each dropped file has exactly one ledger row and sits in exactly one place:
  ``.done/`` (no bad document) or ``.quarantine/`` with a receipt listing exactly its bad
  documents; nothing is left in the drop folder or ``.processing/``.
* ``ledger_counts``: each ledger row's counts add up to what the file held.
* ``inbox_outcomes``: good rows are applied, duplicate or superseded; bad rows are rejected
  with a reason; none is pending.
* ``delivered``: every routed key's winner reached its provider (the emulator holds it); the
  outbox is empty and there is no dead letter.
* ``applied_once``: no version was applied at a provider more than once (a retried batch
  carries the same idempotency key, which the emulators apply once). A registration is made
  at the provider exactly as often as requests for it were confirmed, a cancellation as often
  as cancels of it were. The churn tool takes no idempotency key (docs/providers.md: its
  documents are upserts by ``data.id``), so an upload whose answer the daemon never got is
  applied again when it is re-sent: a churn version may be applied again only as often as
  there were such uploads (uploads received minus the deliveries the daemon recorded).

With the registrations and churn kinds:

* ``request_outcomes``: every registration request's inbox row is applied and the request ends
  with exactly one outcome in ``registration_requests`` (``confirmed``, with the provider's
  registration id, which the provider holds for that participant and session; or ``refused``
  with a reason), none ``pending``.
* ``pulled``: once settled, every participant and registration at the provider is in
  ``records`` as the provider has it (participants at the provider's ``utcModifiedDate``,
  with ``fp_ext_id`` and ``fp_status``), and no participant the provider does not have.
* ``delivered`` (churn): each ``users`` winner reached the tool, and the tool's table (upserts
  by ``data.id``, in arrival order) ends with exactly that version of each key.
* ``callbacks``: no sync-status callback lost. Every callback the tool sent while the listener
  was up was taken (200), and no upload the daemon recorded ``accepted`` is left unconfirmed
  when a taken callback was sent after the upload started (its timestamp is later).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.registrations.emulator import RegistrationsEmulator, parse_iso

from tests.harness.load import (
    CHURN_BRAND,
    REQUESTS,
    DroppedFile,
    InboxRow,
    Ledger,
    RegistrationRequest,
    Version,
    action_date,
)

MAX_DETAILS = 20  # violations listed per invariant; the count is always exact
# The contacts collection's timestamp field (world.py), which the CRM is never sent.
CRM_TIMESTAMP = "updated_at"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken promise: which invariant, and what exactly was seen."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


def summarise(violations: Iterable[Violation]) -> dict[str, int]:
    """How many violations of each invariant."""
    counts: dict[str, int] = {}
    for violation in violations:
        counts[violation.invariant] = counts.get(violation.invariant, 0) + 1
    return counts


def error_log_violation(line: dict[str, Any]) -> Violation:
    """An ``error_logs`` violation for one error line: its fields, and of a traceback its
    last frames and the error itself (which a cut from the front would lose)."""
    fields = {key: value for key, value in line.items() if key != "exception"}
    detail = str(fields)[:400]
    exception = str(line.get("exception") or "")
    if exception:
        detail += " exception: ..." + exception[-1200:]
    return Violation("error_logs", detail)


def report(violations: list[Violation], seed: int, *, most: int = MAX_DETAILS) -> str:
    """Text for an assertion message: the seed, the counts and the first ``most`` of each."""
    lines = [f"seed {seed}: {len(violations)} violation(s) {summarise(violations)}"]
    shown: dict[str, int] = {}
    for violation in violations:
        shown[violation.invariant] = shown.get(violation.invariant, 0) + 1
        if shown[violation.invariant] <= most:
            lines.append(f"  {violation}")
    return "\n".join(lines)


def _connect(store: Path) -> sqlite3.Connection:
    return sqlite3.connect(store, timeout=30)


def _same(record: tuple[Any, ...], version: Version) -> bool:
    """Does a ``records`` row (body, updated_at, deleted) hold exactly this version?"""
    body, updated_at, deleted = record
    if updated_at != version.ts or bool(deleted) != version.deleted:
        return False
    stored = None if body is None else orjson.loads(body)
    return bool(stored == version.body)


def integrity(store: Path) -> list[Violation]:
    """``integrity_check`` and the trigger-kept counts."""
    found: list[Violation] = []
    db = _connect(store)
    try:
        result = [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            found.append(Violation("integrity", f"integrity_check: {result[:5]}"))
        counted = dict(db.execute("SELECT provider, pending FROM outbox_pending").fetchall())
        actual = dict(db.execute("SELECT provider, COUNT(*) FROM outbox GROUP BY 1").fetchall())
        for provider in set(counted) | set(actual):
            if counted.get(provider, 0) != actual.get(provider, 0):
                found.append(
                    Violation(
                        "integrity",
                        f"outbox_pending says {counted.get(provider, 0)} for {provider}, "
                        f"outbox holds {actual.get(provider, 0)}",
                    )
                )
        counted = dict(db.execute("SELECT status, files FROM files_by_status").fetchall())
        actual = dict(db.execute("SELECT status, COUNT(*) FROM files GROUP BY 1").fetchall())
        for status in set(counted) | set(actual):
            if counted.get(status, 0) != actual.get(status, 0):
                found.append(
                    Violation(
                        "integrity",
                        f"files_by_status says {counted.get(status, 0)} {status}, "
                        f"the ledger has {actual.get(status, 0)}",
                    )
                )
    finally:
        db.close()
    return found


class StoreView:
    """What the oracle reads from the store, in one go."""

    def __init__(self, store: Path) -> None:
        db = _connect(store)
        try:
            self.records: dict[tuple[str, str], tuple[Any, ...]] = {
                (c, k): (body, ts, deleted)
                for c, k, body, ts, deleted in db.execute(
                    "SELECT collection, key, body, updated_at, deleted FROM records"
                )
            }
            self.files: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
            for row in db.execute(
                "SELECT collection, name, id, path, status, docs_seen, docs_applied, "
                "docs_unchanged, docs_rejected, duplicate_of, error FROM files ORDER BY id"
            ):
                self.files.setdefault((row[0], row[1]), []).append(row[2:])
            self.inbox: dict[int, tuple[Any, ...]] = {
                row[0]: row[1:]
                for row in db.execute("SELECT id, status, reason FROM inbox WHERE origin = 'sql'")
            }
            self.outbox = db.execute(
                "SELECT provider, collection, key, updated_at FROM outbox ORDER BY id LIMIT 50"
            ).fetchall()
            self.outbox_count = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            self.dead_letters = db.execute(
                "SELECT provider, collection, key, reason FROM dead_letters LIMIT 20"
            ).fetchall()
            self.dead_letter_count = int(
                db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            )
            self.pending_inbox = int(
                db.execute("SELECT COUNT(*) FROM inbox WHERE status = 'pending'").fetchone()[0]
            )
            # key -> (status, reason, registration_id, action, participant, session)
            self.requests: dict[str, tuple[Any, ...]] = {}
            self.churn_deliveries: list[tuple[Any, ...]] = []  # (id, state, attempted_at)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if "registration_requests" in tables:
                self.requests = {
                    row[0]: row[1:]
                    for row in db.execute(
                        "SELECT key, status, reason, registration_id, action, participant_id, "
                        "session_id FROM registration_requests WHERE collection = ?",
                        (REQUESTS,),
                    )
                }
            self.churn_deliveries = db.execute(
                "SELECT id, state, attempted_at FROM deliveries WHERE provider = 'churn'"
            ).fetchall()
        finally:
            db.close()


def acknowledged(view: StoreView, files: list[DroppedFile], rows: list[InboxRow]) -> list[Version]:
    """Versions the daemon has acknowledged: from files it filed away and rows it processed."""
    versions: list[Version] = []
    for dropped in files:
        entries = view.files.get((dropped.collection, dropped.name), [])
        if any(entry[2] in ("done", "quarantined") for entry in entries):
            versions.extend(v for v in dropped.docs if v is not None)
    for row in rows:
        entry = view.inbox.get(row.row_id)
        if row.version is not None and entry is not None and entry[0] != "pending":
            versions.append(row.version)
    return versions


def durable(view: StoreView, ledger: Ledger) -> list[Violation]:
    """Acknowledged versions are kept; ``records`` holds only versions the load made.

    Read the store (``view``) before the ledger: every committed row is then in the ledger.
    """
    files, rows, remote = ledger.snapshot()
    found: list[Violation] = []
    known: dict[tuple[str, str, int], Version] = {}
    for version in _all_versions(files, rows, remote):
        known[(version.collection, version.key, version.ts)] = version
    for version in acknowledged(view, files, rows):
        record = view.records.get((version.collection, version.key))
        if record is None:
            found.append(Violation("durable", f"{version.source}: {version.key} is not in records"))
        elif record[1] < version.ts:
            found.append(
                Violation(
                    "durable",
                    f"{version.source}: records has {version.key} at {record[1]}, older than "
                    f"the acknowledged {version.ts}",
                )
            )
    collections = {"contacts", "favourites", "users"}
    for (collection, key), record in view.records.items():
        if collection not in collections:
            continue
        made = known.get((collection, key, record[1]))
        if made is None or not _same(record, made):
            found.append(
                Violation(
                    "durable",
                    f"records holds {collection}/{key} at {record[1]} "
                    f"(body {str(record[0])[:120]}), a version the load never made",
                )
            )
    return found


def _all_versions(
    files: list[DroppedFile], rows: list[InboxRow], remote: list[Version]
) -> list[Version]:
    versions = [v for f in files for v in f.docs if v is not None]
    versions += [r.version for r in rows if r.version is not None]
    return versions + remote


def winners(
    files: list[DroppedFile], rows: list[InboxRow], remote: list[Version]
) -> dict[tuple[str, str], Version]:
    """The newest version of each key (every version's timestamp is unique)."""
    best: dict[tuple[str, str], Version] = {}
    for version in _all_versions(files, rows, remote):
        ident = (version.collection, version.key)
        if ident not in best or version.ts > best[ident].ts:
            best[ident] = version
    return best


def drop_folder_leftovers(drop: Path) -> list[str]:
    """Files still in a collection folder or in ``.processing/`` (names relative to ``drop``)."""
    left: list[str] = []
    if not drop.is_dir():
        return left
    for collection in sorted(p for p in drop.iterdir() if p.is_dir()):
        for path in sorted(collection.iterdir()):
            if path.is_file() and not path.name.endswith(".part"):
                left.append(f"{collection.name}/{path.name}")
        processing = collection / ".processing"
        if processing.is_dir():
            left += [f"{collection.name}/.processing/{p.name}" for p in processing.iterdir()]
    return left


def _filed_names(drop: Path) -> dict[tuple[str, str], list[str]]:
    """(collection, base name) -> where copies of it were filed (``.done``/``.quarantine``)."""
    filed: dict[tuple[str, str], list[str]] = {}
    for folder in (*drop.glob("*/.done"), *drop.glob("*/.quarantine")):
        for path in folder.iterdir():
            if path.name.endswith(".error.json"):
                continue
            filed.setdefault((folder.parent.name, path.name), []).append(str(path))
    return filed


def files_once(view: StoreView, files: list[DroppedFile], drop: Path) -> list[Violation]:
    """Each dropped file: one ledger row, the right outcome, one place, an exact receipt."""
    found: list[Violation] = []
    filed = _filed_names(drop)
    expected_names = set()
    for dropped in files:
        ident = (dropped.collection, dropped.name)
        expected_names.add(ident)
        entries = view.files.get(ident, [])
        where = f"{dropped.collection}/{dropped.name}"
        if len(entries) != 1:
            found.append(Violation("files_once", f"{where} has {len(entries)} ledger rows"))
            if not entries:
                continue
        _id, path, status, *_ = entries[-1]
        wanted = "quarantined" if dropped.bad else "done"
        if status != wanted:
            found.append(Violation("files_once", f"{where} is {status}, expected {wanted}"))
        if not Path(path).is_file():
            found.append(Violation("files_once", f"{where}: its ledger path {path} is not there"))
        copies = filed.get(ident, [])
        if copies != [path] and not (len(copies) == 1 and Path(copies[0]) == Path(path)):
            found.append(Violation("files_once", f"{where} filed as {copies}, ledger says {path}"))
        if status == "quarantined":
            receipt = Path(path).with_name(Path(path).name + ".error.json")
            if not receipt.is_file():
                found.append(Violation("files_once", f"{where}: no receipt {receipt.name}"))
            else:
                listed = [e["index"] for e in orjson.loads(receipt.read_bytes())["errors"]]
                if listed != dropped.bad:
                    found.append(
                        Violation(
                            "files_once",
                            f"{where}: the receipt lists documents {listed}, "
                            f"the bad ones are {dropped.bad}",
                        )
                    )
    for ident, copies in filed.items():
        stem = ident[1]
        if ident not in expected_names:
            found.append(
                Violation("files_once", f"{ident[0]}/{stem} was filed but never dropped: {copies}")
            )
    for leftover in drop_folder_leftovers(drop):
        found.append(Violation("files_once", f"{leftover} was never filed away"))
    return found


def ledger_counts(view: StoreView, files: list[DroppedFile]) -> list[Violation]:
    """The ``files`` counts equal what each file held."""
    found: list[Violation] = []
    for dropped in files:
        for entry in view.files.get((dropped.collection, dropped.name), []):
            _id, _path, status, seen, applied, unchanged, rejected, duplicate_of, _error = entry
            if duplicate_of is not None:
                continue
            total = len(dropped.docs)
            if status == "processing":
                continue
            if seen != total or applied + unchanged + rejected != total:
                found.append(
                    Violation(
                        "ledger_counts",
                        f"{dropped.collection}/{dropped.name}: {total} documents, ledger says "
                        f"seen {seen}, applied {applied} + unchanged {unchanged} + rejected "
                        f"{rejected}",
                    )
                )
            elif rejected != len(dropped.bad):
                found.append(
                    Violation(
                        "ledger_counts",
                        f"{dropped.collection}/{dropped.name}: {len(dropped.bad)} bad "
                        f"documents, ledger says rejected {rejected}",
                    )
                )
    return found


def inbox_outcomes(view: StoreView, rows: list[InboxRow]) -> list[Violation]:
    """Good rows processed, bad rows rejected with a reason, none pending."""
    found: list[Violation] = []
    for row in rows:
        entry = view.inbox.get(row.row_id)
        if entry is None:
            found.append(Violation("inbox_outcomes", f"inbox row {row.row_id} is gone"))
            continue
        status, reason = entry
        if row.version is None:
            if status != "rejected" or not reason:
                found.append(
                    Violation(
                        "inbox_outcomes",
                        f"bad inbox row {row.row_id} is {status} (reason {reason!r})",
                    )
                )
        elif status not in ("applied", "duplicate", "superseded"):
            found.append(
                Violation("inbox_outcomes", f"inbox row {row.row_id} is {status}: {reason}")
            )
    return found


def delivered(
    view: StoreView,
    best: dict[tuple[str, str], Version],
    *,
    crm: CrmEmulator | None,
    favourites: FavouritesEmulator | None,
) -> list[Violation]:
    """Every routed winner is at its provider, applied there once; nothing left to send."""
    found: list[Violation] = []
    if view.outbox_count:
        found.append(
            Violation("delivered", f"{view.outbox_count} outbox entries left: {view.outbox[:5]}")
        )
    if view.dead_letter_count:
        found.append(
            Violation(
                "delivered",
                f"{view.dead_letter_count} dead letters (none expected): {view.dead_letters[:3]}",
            )
        )
    if crm is not None:
        with crm.lock:
            contacts = dict(crm.contacts)
            applied = dict(crm.applied)
        for applied_key, times in applied.items():
            if times > 1:
                found.append(
                    Violation("applied_once", f"CRM applied {applied_key[:100]} {times} times")
                )
        for (collection, key), version in best.items():
            if collection != "contacts" or version.deleted:
                continue
            # The CRM gets the contact without the collection's timestamp field.
            contact = {k: v for k, v in (version.body or {}).items() if k != CRM_TIMESTAMP}
            sent = orjson.dumps(contact, option=orjson.OPT_SORT_KEYS).decode()
            if contacts.get(key) != contact:
                found.append(
                    Violation(
                        "delivered",
                        f"CRM holds {str(contacts.get(key))[:100]} for {key}, "
                        f"the winner is {version.source} at {version.ts}",
                    )
                )
            elif applied.get(f"{key}@{sent}", 0) == 0:
                found.append(Violation("delivered", f"CRM never applied the winner of {key}"))
    if favourites is not None:
        with favourites.lock:
            items = {u: dict(i) for u, i in favourites.items.items()}
            applied = dict(favourites.applied)
        for applied_key, times in applied.items():
            if times > 1:
                found.append(
                    Violation("applied_once", f"favourites applied {applied_key} {times} times")
                )
        for (collection, key), version in best.items():
            if collection != "favourites":
                continue
            user, item = key.split(":", 1)
            held = items.get(user, {}).get(item)
            action = "DELETE" if version.deleted else "ADD"
            if held is None or (held["actionDate"], held["action"]) != (
                action_date(version.ts),
                action,
            ):
                found.append(
                    Violation(
                        "delivered",
                        f"favourites holds {held} for {key}, the winner is {version.source} "
                        f"({action} at {action_date(version.ts)})",
                    )
                )
    return found


def winners_in_records(view: StoreView, best: dict[tuple[str, str], Version]) -> list[Violation]:
    """Each key's record is exactly its newest version, and no key is extra."""
    found: list[Violation] = []
    for ident, version in best.items():
        record = view.records.get(ident)
        if record is None or not _same(record, version):
            shown = None if record is None else (str(record[0])[:100], record[1], record[2])
            found.append(
                Violation(
                    "winners",
                    f"{ident[0]}/{ident[1]}: records has {shown}, the newest version is "
                    f"{version.source} at {version.ts}",
                )
            )
    for ident in view.records:
        if ident[0] in ("contacts", "favourites", "users") and ident not in best:
            found.append(Violation("winners", f"{ident[0]}/{ident[1]} is in records, never made"))
    return found


def durable_now(store: Path, ledger: Ledger) -> list[Violation]:
    """What must hold at any moment: integrity and durability (run while the daemon is down)."""
    found = integrity(store)
    view = StoreView(store)
    return found + durable(view, ledger)


def settled(
    store: Path,
    drop: Path,
    ledger: Ledger,
    *,
    crm: CrmEmulator | None = None,
    favourites: FavouritesEmulator | None = None,
    registrations: RegistrationsEmulator | None = None,
    churn: ChurnEmulator | None = None,
) -> list[Violation]:
    """Every invariant, once the daemon has nothing left to do."""
    found = integrity(store)
    view = StoreView(store)
    files, rows, remote = ledger.snapshot()
    best = winners(files, rows, remote)
    found += durable(view, ledger)
    found += winners_in_records(view, best)
    found += files_once(view, files, drop)
    found += ledger_counts(view, files)
    found += inbox_outcomes(view, rows)
    found += delivered(view, best, crm=crm, favourites=favourites)
    if registrations is not None:
        found += requests_decided(view, ledger.snapshot_requests(), registrations)
        found += pulled(view, registrations)
    if churn is not None:
        found += churn_delivered(view, best, churn)
        found += callbacks(view, churn)
    return found


def is_settled(store: Path, drop: Path) -> str | None:
    """None when nothing is left to do; else what is still waiting (for a bounded wait).

    Judged by what a user sees: files waiting on disk, inbox rows pending, outbox entries. (A
    ledger row that says ``processing`` for a file that was filed away is a ``files_once``
    violation, not work left to do.)
    """
    leftovers = drop_folder_leftovers(drop)
    if leftovers:
        return f"{len(leftovers)} file(s) waiting, e.g. {leftovers[:3]}"
    db = _connect(store)
    try:
        pending = db.execute("SELECT COUNT(*) FROM inbox WHERE status = 'pending'").fetchone()[0]
        outbox = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()
    if pending or outbox:
        return f"inbox pending {pending}, outbox {outbox}"
    return None


# -- the registrations provider ------------------------------------------------------------


def requests_decided(
    view: StoreView, requests: list[RegistrationRequest], emulator: RegistrationsEmulator
) -> list[Violation]:
    """``request_outcomes`` and the registrations' ``applied_once`` (see the module doc)."""
    found: list[Violation] = []
    with emulator.lock:
        held = {k: dict(v) for k, v in emulator.items["registrations"].items()}
        applied = dict(emulator.applied)
    registers: dict[str, int] = {}  # "participant:session" -> confirmed register requests
    cancels: dict[str, int] = {}  # registration id -> confirmed cancels
    for request in requests:
        where = f"registration request {request.key} ({request.action} {request.participant} "
        where += f"to {request.session})"
        row = view.inbox.get(request.row_id)
        if row is None or row[0] != "applied":
            found.append(Violation("request_outcomes", f"{where}: its inbox row is {row}"))
        decided = view.requests.get(request.key)
        if decided is None:
            found.append(Violation("request_outcomes", f"{where} is not in the view"))
            continue
        status, reason, registration, *_ = decided
        if status == "refused":
            if not reason:
                found.append(Violation("request_outcomes", f"{where} refused without a reason"))
            continue
        if status != "confirmed":
            found.append(Violation("request_outcomes", f"{where} is {status}"))
            continue
        there = held.get(str(registration)) if registration else None
        if there is None or (there["participantId"], there["sessionId"]) != (
            request.participant,
            request.session,
        ):
            found.append(
                Violation(
                    "request_outcomes",
                    f"{where} confirmed as registration {registration}, the provider has {there}",
                )
            )
            continue
        if request.action == "register":
            pair = f"{request.participant}:{request.session}"
            registers[pair] = registers.get(pair, 0) + 1
        else:
            cancels[str(registration)] = cancels.get(str(registration), 0) + 1
            if there["status"] != "Cancelled":
                found.append(
                    Violation("request_outcomes", f"{where} confirmed, the provider has {there}")
                )
    for what, confirmed, suffix in (
        ("registered", registers, "@register"),
        ("cancelled", cancels, "@cancel"),
    ):
        made = {k.removesuffix(suffix): n for k, n in applied.items() if k.endswith(suffix)}
        for ident in sorted(set(made) | set(confirmed)):
            times, asked = made.get(ident, 0), confirmed.get(ident, 0)
            if times > asked:
                found.append(
                    Violation(
                        "applied_once",
                        f"the provider {what} {ident} {times} times for {asked} confirmed "
                        "request(s)",
                    )
                )
            elif times < asked:
                found.append(
                    Violation(
                        "request_outcomes",
                        f"{asked} request(s) confirmed as {what} {ident}, the provider did it "
                        f"{times} times",
                    )
                )
    return found


def _participant_fields(item: dict[str, Any]) -> dict[str, Any]:
    status = "active" if item.get("RegistrationStatus") == "Registered" else "cancelled"
    return {**item, "fp_ext_id": item["id"], "fp_status": status}


def pulled(view: StoreView, emulator: RegistrationsEmulator) -> list[Violation]:
    """Participants and registrations in ``records`` are the provider's (see the module doc)."""
    found: list[Violation] = []
    with emulator.lock:
        participants = {k: dict(v) for k, v in emulator.items["participants"].items()}
        registrations = {k: dict(v) for k, v in emulator.items["registrations"].items()}
    for ident, item in participants.items():
        record = view.records.get(("participants", ident))
        wanted = _participant_fields(item)
        stored = None if record is None or record[0] is None else orjson.loads(record[0])
        if record is None or record[1] != parse_iso(item["utcModifiedDate"]) or stored != wanted:
            shown = None if record is None else (str(record[0])[:160], record[1])
            found.append(
                Violation(
                    "pulled", f"participant {ident}: records has {shown}, the provider {item}"
                )
            )
    for collection, key in view.records:
        if collection == "participants" and key not in participants:
            found.append(
                Violation("pulled", f"participant {key} is in records, not at the provider")
            )
    for ident, item in registrations.items():
        record = view.records.get(("registrations", ident))
        stored = None if record is None or record[0] is None else orjson.loads(record[0])
        fields = ("participantId", "sessionId", "status")
        if stored is None or {f: stored.get(f) for f in fields} != {f: item[f] for f in fields}:
            found.append(
                Violation(
                    "pulled",
                    f"registration {ident}: records has {stored}, the provider {item}",
                )
            )
    return found


# -- the churn tool ------------------------------------------------------------------------


def churn_delivered(
    view: StoreView, best: dict[tuple[str, str], Version], emulator: ChurnEmulator
) -> list[Violation]:
    """The churn side of ``delivered`` and ``applied_once`` (see the module doc)."""
    found: list[Violation] = []
    with emulator.lock:
        documents = list(emulator.documents)
        applied = dict(emulator.applied)
        uploads = sum(1 for upload in emulator.uploads if upload["files"])
    table: dict[str, dict[str, Any]] = {}  # data.id -> the last document applied
    for brand, name, document in documents:
        if (brand, name) != (CHURN_BRAND, "user"):
            found.append(
                Violation("delivered", f"the tool got a document for brand {brand}, table {name}")
            )
            continue
        table[str(document["data"].get("id"))] = document
    for (collection, key), version in best.items():
        if collection != "users" or version.deleted:
            continue
        there = table.get(key)
        if there != version.body:
            found.append(
                Violation(
                    "delivered",
                    f"the churn tool holds {str(there)[:120]} for user {key}, the winner is "
                    f"{version.source} at {version.ts}",
                )
            )
    recorded = sum(
        1 for _id, state, _at in view.churn_deliveries if state in ("accepted", "confirmed")
    )
    unanswered = max(0, uploads - recorded)
    for applied_key, times in applied.items():
        if times - 1 > unanswered:
            found.append(
                Violation(
                    "applied_once",
                    f"the churn tool applied {applied_key} {times} times; {unanswered} of its "
                    f"{uploads} uploads went unanswered",
                )
            )
    return found


def _sync_status_sent(emulator: ChurnEmulator) -> list[tuple[int, int]]:
    """(timestamp, the listener's status) of each sync-status callback the tool sent."""
    with emulator.lock:
        sent = list(emulator.callbacks_sent)
    return [
        (int(body["data"]["timestamp"]), status)
        for kind, body, status in sent
        if kind == "sync-status"
    ]


def callbacks_owed(emulator: ChurnEmulator) -> int:
    """Sync-status callbacks the tool has still to send (one per upload it took files of)."""
    with emulator.lock:
        uploads = sum(1 for upload in emulator.uploads if upload["files"])
    return max(0, uploads - len(_sync_status_sent(emulator)))


def callbacks(view: StoreView, emulator: ChurnEmulator) -> list[Violation]:
    """``callbacks``: no sync-status callback lost (see the module doc)."""
    found: list[Violation] = []
    sent = _sync_status_sent(emulator)
    for timestamp, status in sent:
        if status not in (200, 0):  # 0: nobody listened (the daemon was down)
            found.append(
                Violation(
                    "callbacks", f"the listener answered {status} to the callback of {timestamp}"
                )
            )
    taken = [timestamp for timestamp, status in sent if status == 200]
    latest = max(taken, default=None)
    for delivery, state, attempted_at in view.churn_deliveries:
        if state == "accepted" and latest is not None and latest > attempted_at:
            found.append(
                Violation(
                    "callbacks",
                    f"churn upload {delivery} (started {attempted_at}) is still accepted; the "
                    f"listener took a callback of {latest}",
                )
            )
    return found
