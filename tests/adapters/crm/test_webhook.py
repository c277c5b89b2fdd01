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
from dropsync.daemon.config import parse_config
from dropsync.store.merge import Change
from structlog.testing import capture_logs

from tests.churn_support import WEBHOOK_TOKEN, Running, eventually, merge, running

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
        raw: dict[str, Any] = {
            "store": {"path": str(tmp_path / "store.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "listener": {"port": port},
            "collections": {
                "contacts": {"key": "email", "timestamp": "updated_at", "providers": ["crm"]}
            },
            "providers": {
                "crm": {
                    "kind": "crm",
                    "base_url": server.base_url,
                    "account_id": "acc_1",
                    "secret_env": "CRM_TOKEN",
                    "webhook_token_env": "CRM_WEBHOOK_TOKEN",
                    "backoff_base_s": 0.05,
                    "backoff_cap_s": 0.2,
                }
            },
        }
        config = parse_config(raw, "test.toml")
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
