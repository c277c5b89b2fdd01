"""A request the provider applied just before a SIGKILL is sent again after the restart exactly
as it was (its Idempotency-Key, its versions), before any new batch; a version superseded while
the daemon was down is sent after it. The daemon is a real subprocess; a fault proxy holds the
CRM's answer once the CRM applied the request: the moment to kill."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness.world import make_world
from tests.support import query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _drop(folder: Path, name: str, docs: list[dict[str, Any]]) -> None:
    """Write-then-rename, as the drop folder asks."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{name}.tmp"
    temporary.write_bytes(orjson.dumps(docs))
    os.rename(temporary, folder / name)


def _contact(number: int, version: int) -> dict[str, Any]:
    return {
        "email": f"guest{number}@example.com",
        "name": f"Guest {number} v{version}",
        "updated_at": 1_700_000_000_000 + version,
    }


def test_a_request_applied_before_a_kill_is_sent_again_as_it_was(tmp_path: Path) -> None:
    world = make_world(tmp_path, 13, proxies=True)
    contacts = world.drop / "contacts"
    try:
        world.daemon.start()
        proxy = world.proxy("crm")
        proxy.hold_after_apply("/account")
        _drop(contacts, "first.json", [_contact(n, 1) for n in range(3)])
        assert proxy.held.wait(60), "the CRM was never sent the first contacts"
        world.kill()  # the CRM applied the request; the daemon never saw the answer
        proxy.release()
        crm = world.crm_emulator
        [held] = crm.requests("/account")
        # While it is down: a newer version of guest0, and two new contacts.
        _drop(contacts, "second.json", [_contact(0, 2), _contact(3, 1), _contact(4, 1)])
        # Every request fails until all of it is queued, so the first one the CRM sees after
        # the restart cannot have been formed before the new file was ingested.
        proxy.set_plan({"error_5xx": 1.0})
        world.daemon.start()
        wait_until(
            lambda: (
                query(
                    world.store,
                    "SELECT COUNT(*) FROM outbox WHERE updated_at > ?",
                    (1_700_000_000_001,),
                )[0][0]
                == 1
            ),
            what="guest0's newer version queued",
        )
        wait_until(
            lambda: query(world.store, "SELECT COUNT(*) FROM outbox")[0][0] == 5,
            what="both files' contacts queued",
        )
        proxy.set_plan({})
        wait_until(
            lambda: query(world.store, "SELECT COUNT(*) FROM outbox")[0][0] == 0,
            what="everything delivered",
            timeout=60,
        )
        assert world.stop() == 0
        arrived = crm.requests("/account")
        # The first request after the restart is the held one, as it was: the CRM replays it.
        assert arrived[1].idempotency_key == held.idempotency_key
        with crm.lock:
            applied = dict(crm.applied)
            names = {email: c["name"] for email, c in crm.contacts.items()}
        assert sorted(applied.values()) == [1] * 6, applied  # 3 + guest0 v2 + 2 new, once each
        assert names["guest0@example.com"] == "Guest 0 v2"  # the newer version came after
        # The attempt the kill cut short is marked; no request is left unfinished.
        attempts = query(world.store, "SELECT batch_id, state, error FROM deliveries ORDER BY id")
        assert attempts[0][0] == held.idempotency_key and attempts[0][1] == "failed"
        assert "interrupted" in attempts[0][2]
        assert query(world.store, "SELECT COUNT(*) FROM deliveries WHERE entries IS NOT NULL") == [
            (0,)
        ]
    finally:
        world.close()
