"""The oracle's checks of the registrations and churn kinds, on a small quiet world: they
hold once it settled, and each one fails when the provider's side or the store says otherwise
(so a campaign that finds nothing has looked)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.harness import oracle
from tests.harness.load import CHURN_BRAND
from tests.harness.oracle import Violation
from tests.harness.world import ALL_KINDS, World, make_world
from tests.support import query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(300)]

NEW_INVARIANTS = ("request_outcomes", "pulled", "callbacks", "delivered", "applied_once")


def _found(world: World) -> list[Violation]:
    return [v for v in world.final_violations() if v.invariant in NEW_INVARIANTS]


def test_the_new_checks_hold_and_each_can_fail(tmp_path: Path) -> None:
    world = make_world(tmp_path, 11, kinds=ALL_KINDS)
    try:
        world.daemon.start()
        load = world.load
        for _ in range(6):
            load.ask_registration()
            load.participant_change()
        load.drop_file("users", count=5, bad=False)
        load.drop_file("contacts", count=3, bad=False)
        assert world.settle(120) is None
        assert world.stop() == 0
        assert _found(world) == [], oracle.report(_found(world), 11)

        registrations = world.registrations_emulator
        churn = world.churn_emulator
        assert registrations is not None and churn is not None
        # A participant changed at the provider after the last pull.
        registrations.put("participants", [{"id": "p1", "RegistrationStatus": "Cancelled"}])
        # A registration made twice for one request.
        confirmed = [
            r
            for r in load.ledger.snapshot_requests()
            if r.action == "register"
            and oracle.StoreView(world.store).requests[r.key][0] == "confirmed"
        ]
        assert confirmed, "no request was confirmed"
        pair = f"{confirmed[0].participant}:{confirmed[0].session}@register"
        with registrations.lock:
            registrations.applied[pair] += 1
        # The tool got an older version of a user after the winner; a callback refused; an
        # upload left accepted though a callback after it was taken.
        with churn.lock:
            _, _, document = churn.documents[0]
            older = {**document, "updatedAt": document["updatedAt"] - 1}
            churn.documents.append((CHURN_BRAND, "user", older))
            churn.callbacks_sent.append(
                ("sync-status", {"data": {"status": 200, "timestamp": 1}}, 401)
            )
            churn.callbacks_sent.append(
                (
                    "sync-status",
                    {"data": {"status": 200, "timestamp": int(time.time() * 1000)}},
                    200,
                )
            )
        db = sqlite3.connect(world.store)
        with db:
            db.execute("UPDATE deliveries SET state = 'accepted' WHERE provider = 'churn'")
            db.execute(
                "UPDATE request_outcomes SET status = 'refused', reason = NULL "
                "WHERE key = (SELECT MAX(key) FROM request_outcomes)"
            )
        db.close()

        found = oracle.summarise(_found(world))
        assert found.get("pulled", 0) >= 1, found
        assert found.get("applied_once", 0) >= 1, found
        assert found.get("delivered", 0) >= 1, found
        assert found.get("callbacks", 0) >= 2, found
        assert found.get("request_outcomes", 0) >= 1, found
    finally:
        world.close()


def _ask(world: World, key: str, participant: str, session: str, action: str) -> None:
    db = sqlite3.connect(world.store, timeout=30)
    with db:
        db.execute(
            "INSERT INTO inbox (collection, key, op, body) VALUES ('registration_requests', ?, "
            "'upsert', json_object('participantId', ?, 'sessionId', ?, 'action', ?))",
            (key, participant, session, action),
        )
    db.close()


def _decided(world: World, key: str) -> tuple[str, str | None, str | None]:
    def done() -> tuple[str, str | None, str | None] | None:
        rows = query(
            world.store,
            "SELECT status, reason, registration_id FROM registration_requests WHERE key = ?",
            (key,),
        )
        return rows[0] if rows and rows[0][0] != "pending" else None

    found: tuple[str, str | None, str | None] = wait_until(done, what=f"the outcome of {key}")
    return found


def test_a_cancellation_made_just_before_a_kill_is_made_once(tmp_path: Path) -> None:
    """The provider cancelled, the daemon was killed before it recorded that; after the
    restart the cancel is asked again with the same key and the provider cancels once."""
    world = make_world(tmp_path, 5, proxies=True, kinds=ALL_KINDS)
    try:
        world.daemon.start()
        _ask(world, "tap-1", "p3", "s5", "register")
        status, _, registration = _decided(world, "tap-1")
        assert status == "confirmed" and registration
        proxy = world.proxy("registrations")
        proxy.hold_after_apply("/api/v1/events/ev-2026/registrations/", "DELETE")
        _ask(world, "tap-2", "p3", "s5", "cancel")
        assert proxy.held.wait(60), "the provider was never asked to cancel"
        world.kill()
        proxy.release()
        world.daemon.start()
        assert _decided(world, "tap-2") == ("confirmed", None, registration)
        emulator = world.registrations_emulator
        assert emulator is not None
        assert emulator.applied[f"{registration}@cancel"] == 1
        deletes = proxy.seen("DELETE")
        assert len(deletes) == 2, deletes
        assert world.stop() == 0
    finally:
        world.close()
