"""The CRM webhook's status, with the CRM emulator over loopback: only a success confirms a
job; a failure marks its batch failed with the webhook's reason and queues its records
again once; a status not known leaves the batch waiting, with a warning."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.store.merge import Change
from structlog.testing import capture_logs

from tests.churn_support import (
    WEBHOOK_TOKEN,
    Running,
    crm_webhook_config,
    eventually,
    merge,
    running,
)

pytestmark = pytest.mark.anyio

WEBHOOK = f"/webhooks/crm/{WEBHOOK_TOKEN}"
DELIVERIES = "SELECT state, error FROM deliveries ORDER BY id"


@pytest.fixture(autouse=True)
def crm_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-secret")
    monkeypatch.setenv("CRM_WEBHOOK_TOKEN", WEBHOOK_TOKEN)


def contact(email: str) -> Change:
    body = orjson.dumps({"email": email, "user_id": email.split("@", maxsplit=1)[0]}).decode()
    return Change(
        "contacts", email, body, 5, False, "drop", hashlib.sha256(body.encode()).hexdigest()[:32]
    )


@asynccontextmanager
async def crm_daemon(tmp_path: Path, port: int, crm: CrmEmulator) -> AsyncIterator[Running]:
    """The supervisor and listener with one CRM provider whose webhook comes to the listener;
    two contacts merged and sent."""
    with EmulatorServer(crm) as server:
        config = crm_webhook_config(
            tmp_path, server.base_url, port, provider={"backoff_base_s": 0.05, "backoff_cap_s": 0.2}
        )
        async with running(config, port) as daemon:
            await merge(daemon.store, config, [contact("a@example.com"), contact("b@x.org")])
            daemon.supervisor.wake(["crm"])
            yield daemon


async def test_a_failed_webhook_fails_the_batch_and_queues_its_records_again_once(
    tmp_path: Path, port: int
) -> None:
    crm = CrmEmulator(
        {"acc_1": "crm-secret"},
        webhook_delay_s=0.05,
        webhook_status="failed",
        webhook_error="all contacts rejected",
    )
    reason = "the CRM webhook reported failed: all contacts rejected"
    with capture_logs() as logs:
        async with crm_daemon(tmp_path, port, crm) as daemon:
            # Sent, failed, queued again once, sent again: a new request (a new
            # Idempotency-Key), which the CRM processes as a new job and fails again.
            await eventually(lambda: len(crm.requests("/account")) == 2, "sent again")
            states = await eventually(
                lambda: daemon.rows(
                    "SELECT state, error, remote_ref FROM deliveries "
                    "WHERE (SELECT COUNT(*) FROM deliveries WHERE state = 'failed') = 2 "
                    "ORDER BY id"
                ),
                "the second sending's failure, recorded",
            )
            first, second = crm.requests("/account")
            assert first.idempotency_key != second.idempotency_key
            assert len(crm.jobs) == 2
            assert states == [("failed", reason, crm.jobs[0]), ("failed", reason, crm.jobs[1])]
            # The second failure does not queue the records a third time: left for resync.
            assert await daemon.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
            assert await daemon.rows("SELECT COUNT(*) FROM crm_contacts") == [(0,)]
            # A failure told again changes nothing more.
            body = {"_id": crm.jobs[1], "status": "failed", "error": "all contacts rejected"}
            answer = await daemon.post(WEBHOOK, orjson.dumps(body))
            assert answer.json() == {"ok": True, "outcome": "failed", "deliveries": 0}
            assert await daemon.rows(DELIVERIES) == [("failed", reason)] * 2
            assert await daemon.rows("SELECT COUNT(*) FROM outbox") == [(0,)]
            assert await daemon.rows("SELECT state, requeued FROM delivered") == [
                ("accepted", 1),
                ("accepted", 1),
            ]
    failed = [e for e in logs if e["event"] == "webhook_job_failed"]
    assert [e["queued_again"] for e in failed] == [2, 0, 0]
    assert failed[0]["reason"] == reason
    assert not [e for e in logs if e["event"] == "webhook_confirmed"]


async def test_only_a_success_status_confirms(tmp_path: Path, port: int) -> None:
    crm = CrmEmulator({"acc_1": "crm-secret"}, webhook_delay_s=0.05, webhook_status="Weird")
    with capture_logs() as logs:
        async with crm_daemon(tmp_path, port, crm) as daemon:
            await eventually(
                lambda: [e for e in logs if e["event"] == "webhook_status_unknown"],
                "the emulator's webhook, warned about",
            )
            assert await daemon.rows(DELIVERIES) == [("accepted", None)]
            job = crm.jobs[0]
            bodies: list[dict[str, object]] = [
                {"_id": job},
                {"_id": job, "status": None},
                {"_id": job, "status": 3},
                {"_id": job, "status": ["processed"]},
                {"_id": job, "status": "queued"},
                {"_id": job, "status": "processing"},
                {"_id": job, "status": "processed-ish"},
            ]
            for body in bodies:
                answer = await daemon.post(WEBHOOK, orjson.dumps(body))
                assert answer.status_code == 200
                assert answer.json()["outcome"] in ("unknown", "not final")
            assert await daemon.rows(DELIVERIES) == [("accepted", None)]
            assert await daemon.rows("SELECT state FROM delivered") == [("accepted",)] * 2
            # A success confirms, and keeps the contacts' ids.
            success = {"_id": job, "status": " Processed ", "contacts": [{"email": "a@x.org"}]}
            answer = await daemon.post(WEBHOOK, orjson.dumps(success))
            assert answer.json() == {"ok": True, "outcome": "confirmed", "deliveries": 1}
            assert await daemon.rows(DELIVERIES) == [("confirmed", None)]
            assert await daemon.rows("SELECT email FROM crm_contacts") == [("a@x.org",)]
            # A failure after it still fails the batch (its records are queued again).
            failure = {"_id": job, "status": "rejected", "errors": [{"email": "a@example.com"}]}
            answer = await daemon.post(WEBHOOK, orjson.dumps(failure))
            assert answer.json() == {"ok": True, "outcome": "failed", "deliveries": 1}
            rows = await daemon.rows(DELIVERIES)
            assert rows[0] == (
                "failed",
                'the CRM webhook reported rejected: [{"email":"a@example.com"}]',
            )
    unknown = [e for e in logs if e["event"] == "webhook_status_unknown"]
    assert [e["status"] for e in unknown][:4] == [
        "status weird",
        "no status",
        "no status",
        "status 3",
    ]
    assert all(e["log_level"] == "warning" for e in unknown)


@pytest.mark.parametrize("status", ["processed", "failed"])
async def test_a_webhook_before_its_batch_is_recorded_is_held_and_applied_then(
    tmp_path: Path, port: int, status: str
) -> None:
    # The job finished, and its webhook came, before the 201 naming the job reached the
    # daemon: a local-first daemon takes it once, when it records the batch, never refuses
    # it nor lets the batch wait for confirm_timeout_s.
    crm = CrmEmulator(
        {"acc_1": "crm-secret"},
        webhook_status=status,
        webhook_error="all contacts rejected" if status == "failed" else None,
        webhook_before_answer=True,
    )
    with capture_logs() as logs:
        async with crm_daemon(tmp_path, port, crm) as daemon:
            final = "confirmed" if status == "processed" else "failed"
            await eventually(
                lambda: daemon.rows(
                    "SELECT 1 FROM deliveries WHERE remote_ref = ? AND state = ?",
                    (crm.jobs[0] if crm.jobs else "", final),
                ),
                f"the first batch {final} by the webhook held for it",
            )
            assert await daemon.rows("SELECT COUNT(*) FROM held_jobs") == [(0,)]
            if status == "processed":
                assert await daemon.rows("SELECT DISTINCT state FROM delivered") == [("confirmed",)]
                assert await daemon.rows("SELECT COUNT(*) FROM crm_contacts") == [(2,)]
            else:  # queued again once, as a failure told after the recording is
                await eventually(lambda: len(crm.requests("/account")) == 2, "sent again")
    events = [e["event"] for e in logs]
    assert "webhook_job_held" in events and "job_outcome_applied_late" in events
    assert "webhook_unknown_job" not in events


async def test_a_held_outcome_waits_for_a_batch_that_carries_its_job(tmp_path: Path) -> None:
    from functools import partial

    from dropsync.store import callbacks, outbox
    from dropsync.store.handle import Store
    from dropsync.store.merge import apply_changes

    async with await Store.open(tmp_path / "s.db") as store:
        await store.transact(
            partial(callbacks.hold_job, provider="crm", job_id="j2", failed=False, error=""),
            now=1,
        )
        await store.transact(
            partial(callbacks.hold_job, provider="crm", job_id="j2", failed=True, error="no"),
            now=2,
        )  # a failure told once stays a failure
        await store.transact(
            lambda db: apply_changes(db, [contact("a@x.org")], {"contacts": ("crm",)}, now=3)
        )
        async with store.read() as db:
            entries = await outbox.take_batch(db, "crm", 10)

        def deliver(db: Any, remote_ref: str) -> tuple[int, int]:
            outbox.deliver_batch(
                db,
                provider="crm",
                entries=entries,
                batch_id="k",
                state="accepted",
                http_status=201,
                latency_ms=1.0,
                remote_ref=remote_ref,
                now=4,
            )
            return callbacks.settle_held_jobs(db, "crm", remote_ref, now=4)

        assert await store.transact(deliver, "j1") == (0, 0)  # another job: nothing
        assert await store.transact(deliver, "j1,j2") == (1, 1)  # failed: queued again once
        assert await store.call(
            lambda db: db.execute("SELECT COUNT(*) FROM held_jobs").fetchall()
        ) == [(0,)]


async def test_a_webhook_of_a_full_request_is_taken_past_the_listener_s_megabyte(
    tmp_path: Path, port: int
) -> None:
    # 1000 contacts, each with the fields asked back: over 1 MiB. The token is checked before
    # the body is read, so a caller without it is refused (404) whatever it sends.
    crm = CrmEmulator({"acc_1": "crm-secret"}, webhook_delay_s=0.05)
    async with crm_daemon(tmp_path, port, crm) as daemon:
        await eventually(lambda: crm.jobs, "the batch sent")
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM deliveries WHERE state = 'confirmed'"),
            "the emulator's own webhook confirmed it",
        )
        contacts = [
            {"_id": f"c{i}", "email": f"guest{i}@example.com", "notes": "x" * 1500}
            for i in range(1000)
        ]
        body = orjson.dumps({"_id": crm.jobs[0], "status": "processed", "contacts": contacts})
        assert len(body) > 1 << 20
        answer = await daemon.post(WEBHOOK, body)
        assert answer.status_code == 200, answer.text
        assert (await daemon.post("/webhooks/crm/not-the-token", body)).status_code == 404
