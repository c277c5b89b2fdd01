"""A seeded, steady mixed load and its ledger of everything it produced.

The generator drops files (write-then-rename, as documented), inserts rows into the SQL inbox
from another connection, and changes favourites at the provider (as another device would, the
provider's own newer-wins rule applies), all drawn from one ``random.Random(seed)``. Every
version it makes has a timestamp no other version has, so the last-write-wins winner of a key is
simply its newest version, and the oracle can tell each stored version from every other.

Collections: ``contacts`` (plain objects keyed by ``email``, routed to the CRM), ``favourites``
(favourites actions, routed to the favourites provider, which is also pulled) and ``users``
(churn envelopes, routed to the churn tool when the world has one, else kept locally). A few
documents and rows are bad on purpose (the ledger knows which): they must be refused with a
reason and must not stop the good ones.

With a registrations emulator the mix also changes participants at the provider (their name,
their registration status; now and then a new one) and inserts registration requests into
``inbox`` as an app does when a person taps "Register" or "Cancel" (no time given). Some are
refused by the provider on purpose: an unknown participant or session, a cancelled
participant, a full session, a pair asked twice.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.registrations.emulator import RegistrationsEmulator

FAVOURITE_USERS = ("alice", "bob")
CHURN_BRAND = 15  # the churn provider's fixed brand id
PARTICIPANTS = 40  # p1..p40 at the registrations provider at start (the load adds a few)
SESSIONS = 12  # s1..s12
SMALL_SESSIONS = {"s1": 1, "s2": 2}  # capacities: some requests are refused as full
REQUESTS = "registration_requests"


def action_date(ms: int) -> str:
    """Epoch ms as the favourites API writes it: GMT ISO-8601 with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(ms // 1000)) + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a record, as the store must hold it once it wins."""

    collection: str
    key: str
    ts: int
    deleted: bool
    body: Any  # the document as stored in records.body (parsed), None for a bodiless delete
    source: str  # where it came from: "file NAME #i", "inbox row N" or "provider favourites"


@dataclass(slots=True)
class DroppedFile:
    """A file the generator dropped; ``docs[i]`` is None where the document is bad on purpose."""

    collection: str
    name: str
    docs: list[Version | None]

    @property
    def bad(self) -> list[int]:
        """Indices of the documents made bad on purpose."""
        return [i for i, doc in enumerate(self.docs) if doc is None]


@dataclass(slots=True)
class InboxRow:
    """A row the generator committed to ``inbox``; ``version`` is None for a bad one."""

    row_id: int
    version: Version | None


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """A registration request an app inserted into ``inbox`` (row ``row_id``)."""

    row_id: int
    key: str
    participant: str
    session: str
    action: str  # "register" or "cancel"


@dataclass(slots=True)
class Ledger:
    """Everything the generator produced (a consistent copy is taken under ``lock``)."""

    files: list[DroppedFile] = field(default_factory=list)
    rows: list[InboxRow] = field(default_factory=list)
    remote: list[Version] = field(default_factory=list)  # applied at the provider itself
    requests: list[RegistrationRequest] = field(default_factory=list)
    participant_changes: int = 0  # changes made at the registrations provider
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[list[DroppedFile], list[InboxRow], list[Version]]:
        """Copies of the three lists, taken together."""
        with self.lock:
            return list(self.files), list(self.rows), list(self.remote)

    def snapshot_requests(self) -> list[RegistrationRequest]:
        """A copy of the registration requests."""
        with self.lock:
            return list(self.requests)


class Load:
    """The load generator; ``step()`` does one random action, ``start()`` runs it steadily."""

    def __init__(
        self,
        drop: Path,
        store: Path,
        seed: int,
        *,
        favourites: FavouritesEmulator | None = None,
        registrations: RegistrationsEmulator | None = None,
        contact_keys: int = 150,
        favourite_items: int = 30,
        bad_rate: float = 0.08,
        big_file_rate: float = 0.08,
        big_file_docs: int = 300,
    ) -> None:
        self.drop = drop
        self.store = store
        self.rng = random.Random(seed)
        self.favourites = favourites
        self.registrations = registrations
        self._participants = PARTICIPANTS
        self._requests = 0
        self.contact_keys = contact_keys
        self.favourite_items = favourite_items
        self.bad_rate = bad_rate
        self.big_file_rate = big_file_rate
        self.big_file_docs = big_file_docs
        self.ledger = Ledger()
        # Timestamps well in the past (the skew guard never applies), each used once.
        self.base_ts = (int(time.time() * 1000) // 1000 - 30 * 86400) * 1000
        self._used_ts: set[int] = set()
        self._counter = 0
        self._files = 0
        self._db: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Held by each step of the background load: take it to make a change from another
        # thread (the generator's counters and random draws are not shared safely otherwise).
        self.busy = threading.Lock()
        self.errors: list[str] = []  # the generator's own failures (a failed INSERT, say)

    # -- versions -----------------------------------------------------------------------

    def _ts(self) -> int:
        """A fresh timestamp; one in ten is older than recent ones (arrives out of order)."""
        self._counter += 1
        while True:
            back = self.rng.randrange(1, 200) if self.rng.random() < 0.1 else 0
            ts = self.base_ts + max(1, self._counter - back) * 1000 + self.rng.randrange(1000)
            if ts not in self._used_ts:
                self._used_ts.add(ts)
                return ts

    def _contact(self, source: str, *, in_file: bool) -> tuple[Version, dict[str, Any] | None]:
        email = f"guest{self.rng.randrange(self.contact_keys)}@example.com"
        ts = self._ts()
        deleted = self.rng.random() < 0.07
        document: dict[str, Any] = {"email": email, "updated_at": ts, "n": self._counter}
        if deleted:
            if not in_file:  # an inbox delete carries no body
                return Version("contacts", email, ts, True, None, source), None
            document["_deleted"] = True
        else:
            document["name"] = self.rng.choice(("Ann", "Bob", "Cem", "Dana", "Élodie", "Zoë"))
            document["nights"] = self.rng.randrange(1, 15)
        return Version("contacts", email, ts, deleted, document, source), document

    def _favourite(self, source: str) -> tuple[Version, dict[str, Any]]:
        user = self.rng.choice(FAVOURITE_USERS)
        item = f"session_{self.rng.randrange(self.favourite_items)}"
        ts = self._ts()
        action = "DELETE" if self.rng.random() < 0.2 else "ADD"
        document = {"user": user, "item": item, "action": action, "actionDate": action_date(ts)}
        return Version("favourites", f"{user}:{item}", ts, action == "DELETE", document, source), (
            document
        )

    def _user(self, source: str) -> tuple[Version, dict[str, Any]]:
        ident = self.rng.randrange(100)
        ts = self._ts()
        document = {
            "data": {"id": ident, "email": f"user{ident}@example.com", "n": self._counter},
            "createdAt": self.base_ts,
            "updatedAt": ts,
        }
        return Version("users", str(ident), ts, False, document, source), document

    # -- actions ------------------------------------------------------------------------

    def drop_file(
        self,
        collection: str | None = None,
        *,
        count: int | None = None,
        bad: bool | None = None,
        staged: bool = False,
    ) -> DroppedFile:
        """Write one file to a temporary name and rename it into its collection folder.

        ``count`` documents (default: drawn), one of them bad if ``bad`` (default: drawn).
        ``staged``: left at its temporary name, ``<name>.part`` in the folder (ignored by the
        daemon), for the caller to rename in later.
        """
        self._files += 1
        collection = collection or self.rng.choice(("contacts", "contacts", "favourites", "users"))
        if count is None:
            big = self.rng.random() < self.big_file_rate
            count = self.rng.randrange(self.big_file_docs // 2, self.big_file_docs) if big else 0
            count = count or self.rng.choice((1, 1, 2, 3, 5, 8, 13, 21))
        form = self.rng.choice(("array", "array", "ndjson")) if count > 1 else "object"
        name = f"{collection}-{self._files:06d}.{'ndjson' if form == 'ndjson' else 'json'}"
        docs: list[Version | None] = []
        raw: list[object] = []
        if bad is None:
            bad = self.rng.random() < self.bad_rate
        bad_at = self.rng.randrange(count) if bad else -1
        for index in range(count):
            source = f"file {name} #{index}"
            if index == bad_at:
                docs.append(None)
                raw.append(self._bad_document(collection))
                continue
            if collection == "contacts":
                version, document = self._contact(source, in_file=True)
            elif collection == "favourites":
                version, document = self._favourite(source)
            else:
                version, document = self._user(source)
            docs.append(version)
            raw.append(document)
        if form == "ndjson":
            content = b"".join(orjson.dumps(d) + b"\n" for d in raw)
        elif form == "object":
            content = orjson.dumps(raw[0])
        else:
            content = orjson.dumps(raw)
        folder = self.drop / collection
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{name}.part"
        temporary.write_bytes(content)
        dropped = DroppedFile(collection, name, docs)
        with self.ledger.lock:
            self.ledger.files.append(dropped)
        if not staged:
            temporary.rename(folder / name)
        return dropped

    def _bad_document(self, collection: str) -> dict[str, Any]:
        if collection == "favourites":
            return {"user": "alice", "item": "x", "action": "MAYBE", "actionDate": "soon"}
        if collection == "users":
            return {"data": {"id": 1}, "createdAt": 0, "updatedAt": "yesterday"}
        return {"email": "bad@example.com", "updated_at": "not a time"}

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.store, timeout=60, check_same_thread=False)
        return self._db

    def insert_rows(self, count: int | None = None) -> list[InboxRow]:
        """Commit a few rows to ``inbox`` in one transaction, as a local program would."""
        count = count or self.rng.randrange(1, 12)
        made: list[tuple[tuple[object, ...], Version | None]] = []
        for _ in range(count):
            self._counter += 1
            if self.rng.random() < self.bad_rate / 2:
                made.append((self._bad_row(), None))
                continue
            source = "inbox row"
            if self.rng.random() < 0.6:
                version, document = self._contact(source, in_file=False)
                op = "delete" if version.deleted else "upsert"
            else:
                version, document = self._favourite(source)
                op = "delete" if version.deleted else "upsert"
            body = None if document is None else orjson.dumps(document).decode()
            made.append(((version.collection, version.key, op, body, version.ts), version))
        db = self._connection()
        rows: list[InboxRow] = []
        # The ledger is locked across the commit: whoever reads the store and then the ledger
        # finds every committed row in it.
        with self.ledger.lock:
            with db:
                for values, made_version in made:
                    cursor = db.execute(
                        "INSERT INTO inbox (collection, key, op, body, updated_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        values,
                    )
                    row_id = int(cursor.lastrowid or 0)
                    source = f"inbox row {row_id}"
                    rows.append(
                        InboxRow(
                            row_id,
                            None
                            if made_version is None
                            else dataclasses.replace(made_version, source=source),
                        )
                    )
            self.ledger.rows.extend(rows)
        return rows

    def _bad_row(self) -> tuple[object, ...]:
        ts = self.base_ts + self._counter * 1000
        return self.rng.choice(
            (
                ("contacts", "bad@example.com", "merge", "{}", ts),
                ("contacts", "bad@example.com", "upsert", "{not json", ts),
                ("contacts", "bad@example.com", "upsert", '{"email": 1}', "whenever"),
                ("contacts", "", "upsert", '{"email": ""}', ts),
            )
        )

    def remote_change(self) -> Version | None:
        """A favourite changed at the provider by another device (the provider's newer-wins)."""
        if self.favourites is None:
            return None
        version, document = self._favourite("provider favourites")
        emulator = self.favourites
        user, item = version.key.split(":", 1)
        with emulator.lock:
            stored = emulator.items.setdefault(user, {})
            current = stored.get(item)
            if current is not None and current["actionDate"] >= document["actionDate"]:
                return None  # older than what the provider has: it keeps its own
            stored[item] = {k: document[k] for k in ("item", "action", "actionDate")}
            with self.ledger.lock:
                self.ledger.remote.append(version)
        return version

    def participant_change(self) -> None:
        """A participant changed at the registrations provider (a new one now and then)."""
        if self.registrations is None:
            return
        if self.rng.random() < 0.1:
            self._participants += 1
            number = self._participants
        else:
            number = self.rng.randrange(1, self._participants + 1)
        self._counter += 1
        status = "Cancelled" if self.rng.random() < 0.15 else "Registered"
        self.registrations.put(
            "participants",
            [
                {
                    "id": f"p{number}",
                    "firstName": f"{self.rng.choice(('Ann', 'Bo', 'Cem', 'Zoë'))}{self._counter}",
                    "lastName": f"Last{number}",
                    "email": f"p{number}@example.com",
                    "company": "Example Ltd",
                    "RegistrationStatus": status,
                }
            ],
        )
        with self.ledger.lock:
            self.ledger.participant_changes += 1

    def ask_registration(self) -> RegistrationRequest:
        """Insert one registration request into ``inbox`` as an app does (no time given).

        Mostly "register" for a random pair (so some pairs are asked twice: one is refused),
        a few for an unknown participant or session; one in five cancels a pair asked before.
        """
        self._requests += 1
        key = f"req-{self._requests:05d}"
        with self.ledger.lock:
            asked = [r for r in self.ledger.requests if r.action == "register"]
        if asked and self.rng.random() < 0.2:
            earlier = self.rng.choice(asked)
            participant, session, action = earlier.participant, earlier.session, "cancel"
        else:
            action = "register"
            participant = f"p{self.rng.randrange(1, self._participants + 1)}"
            session = f"s{self.rng.randrange(1, SESSIONS + 1)}"
            roll = self.rng.random()
            if roll < 0.04:
                participant = "p-unknown"
            elif roll < 0.08:
                session = "s-unknown"
        body = orjson.dumps(
            {"participantId": participant, "sessionId": session, "action": action}
        ).decode()
        db = self._connection()
        with self.ledger.lock:
            with db:
                cursor = db.execute(
                    "INSERT INTO inbox (collection, key, op, body) VALUES (?, ?, 'upsert', ?)",
                    (REQUESTS, key, body),
                )
            request = RegistrationRequest(
                int(cursor.lastrowid or 0), key, participant, session, action
            )
            self.ledger.requests.append(request)
        return request

    def step(self) -> None:
        """One random action of the mix."""
        roll = self.rng.random()
        if self.registrations is not None:
            # The registrations provider's share is drawn first, so the rest of the mix
            # keeps its proportions.
            if roll < 0.1:
                self.ask_registration()
                return
            if roll < 0.15:
                self.participant_change()
                return
            roll = (roll - 0.15) / 0.85
        if roll < 0.5:
            self.drop_file()
        elif roll < 0.85:
            self.insert_rows()
        elif self.favourites is not None:
            self.remote_change()
        else:
            self.drop_file()

    # -- steady load in the background ---------------------------------------------------

    def start(self, per_second: float = 12.0) -> None:
        """Run ``step()`` about ``per_second`` times a second in a thread until ``stop()``."""
        self._stop.clear()

        def run() -> None:
            pause = 1.0 / per_second
            while not self._stop.wait(pause):
                try:
                    with self.busy:
                        self.step()
                except Exception as exc:  # recorded: the oracle reports it
                    self.errors.append(f"{type(exc).__name__}: {exc}")

        self._thread = threading.Thread(target=run, name="campaign-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background load (the action under way finishes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
            self._thread = None

    def close(self) -> None:
        """Stop, and close the inbox connection."""
        self.stop()
        if self._db is not None:
            self._db.close()
            self._db = None
