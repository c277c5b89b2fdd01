"""The CRM webhook over loopback: what it sends back (the default fields, the extra fields
asked for, the purchase) is kept by the contact's identity, a contact without an email
included; any shape of body is answered and never breaks the store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.config import Config, parse_config
from dropsync.store.merge import Change

from tests.churn_support import WEBHOOK_TOKEN, eventually, merge, running

pytestmark = pytest.mark.anyio

TS = 1_700_000_000_000
PURCHASE = {"transaction_code": "T-1", "price": 340, "currency": "USD", "product_uuid": "p-1"}


@pytest.fixture(autouse=True)
def crm_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-secret")
    monkeypatch.setenv("CRM_WEBHOOK_TOKEN", WEBHOOK_TOKEN)


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": "crm-secret"}, webhook_delay_s=0.05)) as server:
        yield server


def config(tmp_path: Path, base_url: str, port: int) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "store.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "listener": {"port": port},
            "collections": {
                "guests": {"key": "user_id", "timestamp": "updated_at", "providers": ["crm"]},
                "bookings": {
                    "key": "purchase.transaction_code",
                    "timestamp": "updated_at",
                    "providers": ["crm"],
                },
            },
            "providers": {
                "crm": {
                    "kind": "crm",
                    "base_url": base_url,
                    "account_id": "acc_1",
                    "secret_env": "CRM_TOKEN",
                    "webhook_token_env": "CRM_WEBHOOK_TOKEN",
                    "contacts_extra_fields": ["name_first", "loyalty"],
                    "purchase_extra_fields": ["price", "status"],
                }
            },
        },
        "test.toml",
    )


def change(collection: str, key: str, body: dict[str, Any]) -> Change:
    text = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return Change(collection, key, text, TS, False, "drop", digest)


async def test_the_webhook_s_fields_are_kept_by_identity(
    tmp_path: Path, port: int, crm: EmulatorServer
) -> None:
    settings = config(tmp_path, crm.base_url, port)
    guest = {"user_id": "u-1", "phone": "+34600000000", "name_first": "Ann", "updated_at": TS}
    booking = {
        "contacts": [
            {"email": "bob@example.com", "name_first": "Bob", "loyalty": 3},
            {"user_id": "u-2", "email": "cy@example.com"},
        ],
        "purchase": {**PURCHASE, "status": "check_in"},
        "updated_at": TS,
    }
    async with running(settings, port) as daemon:
        await merge(
            daemon.store,
            settings,
            [change("guests", "u-1", guest), change("bookings", "T-1", booking)],
        )
        daemon.supervisor.wake(["crm"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM deliveries WHERE state = 'confirmed'"),
            "the webhook confirms the batch",
        )
        await eventually(lambda: daemon.rows("SELECT 1 FROM crm_purchases"), "the purchase")
        contacts = await daemon.rows(
            "SELECT identity, contact, email, user_id, crm_id, fields FROM crm_contacts "
            "ORDER BY contact"
        )
        purchases = await daemon.rows("SELECT transaction_code, crm_id, fields FROM crm_purchases")
    emulator = crm.emulator
    assert isinstance(emulator, CrmEmulator)
    assert [row[:4] for row in contacts] == [
        ("email", "bob@example.com", "bob@example.com", None),
        ("user_id", "u-1", None, "u-1"),
        ("user_id", "u-2", "cy@example.com", "u-2"),
    ]
    assert [row[4] for row in contacts] == [
        emulator.crm_ids["bob@example.com"],
        emulator.crm_ids["u-1"],
        emulator.crm_ids["cy@example.com"],
    ]
    fields = {row[1]: json.loads(row[5]) for row in contacts}
    assert fields["u-1"]["name_first"] == "Ann" and fields["u-1"]["loyalty"] is None
    assert fields["bob@example.com"]["loyalty"] == 3
    assert "updated_at" not in fields["u-1"]  # the timestamp was never sent
    [(code, crm_id, purchase_fields)] = purchases
    assert code == "T-1" and crm_id is not None
    assert json.loads(purchase_fields) == {
        "_id": crm_id,
        "transaction_code": "T-1",
        "price": 340,
        "status": "check_in",
    }


@pytest.mark.parametrize(
    "contacts",
    [
        '[{"user_id": true, "email": 5, "_id": {"a": 1}}]',
        '[{"user_id": "u-9", "x": 1e400}]',  # kept, without fields
        '[{"user_id": "' + "u" * 100_000 + '"}]',
        '{"user_id": "u-9"}',
        "[[], null, 1]",
    ],
)
async def test_a_webhook_of_any_shape_is_answered_and_keeps_what_it_can(
    tmp_path: Path, port: int, crm: EmulatorServer, contacts: str
) -> None:
    settings = config(tmp_path, crm.base_url, port)
    async with running(settings, port) as daemon:
        await merge(daemon.store, settings, [change("guests", "u-1", {"user_id": "u-1"})])
        daemon.supervisor.wake(["crm"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM crm_contacts"), "the emulator's own webhook"
        )
        emulator = crm.emulator
        assert isinstance(emulator, CrmEmulator)
        job = json.dumps(emulator.jobs[0])
        body = f'{{"_id": {job}, "status": "processed", "contacts": {contacts}, '
        body += f'"purchase": {contacts}}}'
        answer = await daemon.post(f"/webhooks/crm/{WEBHOOK_TOKEN}", body.encode())
        assert answer.status_code == 200, answer.text
        rows = await daemon.rows("SELECT contact, fields FROM crm_contacts ORDER BY contact")
        assert rows[0][0] == "u-1"
        for contact, fields in rows[1:]:
            assert contact.startswith("u-9") or contact == "u" * 100_000
            assert fields is None or json.loads(fields)["user_id"] == contact


async def test_a_webhook_before_its_job_is_recorded_still_keeps_what_it_says(
    tmp_path: Path, port: int, crm: EmulatorServer
) -> None:
    """A batch of several requests (a booking, plain contacts) is recorded once its last
    request is answered; the first request's webhook can come before that. What it says
    about the contacts and the purchase is kept; it confirms nothing."""
    settings = config(tmp_path, crm.base_url, port)
    async with running(settings, port) as daemon:
        body = {
            "_id": "not-recorded-yet",
            "status": "processed",
            "contacts": [{"_id": "c-9", "user_id": "u-9", "name_first": "Di"}],
            "purchase": {"_id": "p-9", "transaction_code": "T-9", "price": 12},
        }
        answer = await daemon.post(f"/webhooks/crm/{WEBHOOK_TOKEN}", json.dumps(body).encode())
        assert answer.status_code == 200 and answer.json()["deliveries"] == 0
        assert await daemon.rows("SELECT contact, crm_id, job_id FROM crm_contacts") == [
            ("u-9", "c-9", "not-recorded-yet")
        ]
        assert await daemon.rows("SELECT transaction_code, crm_id FROM crm_purchases") == [
            ("T-9", "p-9")
        ]
        assert await daemon.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
