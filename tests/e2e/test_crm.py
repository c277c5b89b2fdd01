"""The CRM as its document (seed 001) writes it, through the daemon as a subprocess: a
contact identified by user_id alone is delivered, the collection's timestamp is not sent,
a booking is one request, a bad purchase status is a local dead letter, and what the
webhook sends back lands in the store."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.support import DaemonProcess, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

SECRET = "crm-token-5d4c3b2a19"
WEBHOOK_TOKEN = "crm-webhook-token-8e7f6a5b4c3d"
TS = 1_700_000_000_000
PURCHASE = {"transaction_code": "T-1", "price": 340, "currency": "USD", "product_uuid": "p-1"}


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": SECRET}, webhook_delay_s=0.05)) as server:
        yield server


def config(tmp_path: Path, base_url: str, port: int) -> str:
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 10
[listener]
port = {port}
public_url = "http://127.0.0.1:{port}"
[collections.guests]
key = "user_id"
timestamp = "updated_at"
providers = ["crm"]
[collections.bookings]
key = "purchase.transaction_code"
timestamp = "updated_at"
providers = ["crm"]
[providers.crm]
kind = "crm"
base_url = "{base_url}"
account_id = "acc_1"
secret_env = "CRM_TOKEN"
webhook_token_env = "CRM_WEBHOOK_TOKEN"
contacts_extra_fields = ["name_first"]
purchase_extra_fields = ["price", "status"]
backoff_base_s = 0.05
backoff_cap_s = 0.5
"""


def test_contacts_without_email_bookings_and_what_the_webhook_sends_back(
    tmp_path: Path, crm: EmulatorServer
) -> None:
    emulator = crm.emulator
    assert isinstance(emulator, CrmEmulator)
    port = free_port()
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, port),
        env={"CRM_TOKEN": SECRET, "CRM_WEBHOOK_TOKEN": WEBHOOK_TOKEN},
    )
    store = tmp_path / "store.db"
    try:
        daemon.start()
        drop_json(
            tmp_path / "drop/guests",
            "guests",
            [
                {
                    "user_id": "u-1",
                    "phone": "+34600000000",
                    "name_first": "Ann",
                    "updated_at": "2026-01-01T00:00:00Z",
                },
                {"user_id": "u-2", "email": "b@example.com", "updated_at": 1_700_000_000_000},
            ],
        )
        guests = [{"email": "c@example.com", "name_first": "Cy"}, {"user_id": "u-4"}]
        drop_json(
            tmp_path / "drop/bookings",
            "bookings",
            [
                {
                    "contacts": guests,
                    "purchase": {**PURCHASE, "status": "check_in"},
                    "updated_at": 1_700_000_000_000,
                },
                {
                    "contacts": guests,
                    "purchase": {**PURCHASE, "transaction_code": "T-2", "status": "shipped"},
                    "updated_at": 1_700_000_000_000,
                },
            ],
        )
        wait_until(
            lambda: (
                query(store, "SELECT COUNT(*) FROM crm_purchases") == [(1,)]
                and query(store, "SELECT COUNT(*) FROM crm_contacts") == [(4,)]
            ),
            what="the webhooks of both requests, kept",
        )
        dead = query(store, "SELECT collection, key, http_status, reason FROM dead_letters")
        contacts = query(
            store, "SELECT identity, contact, email, fields FROM crm_contacts ORDER BY contact"
        )
        purchase = query(store, "SELECT transaction_code, fields FROM crm_purchases")
        assert query(store, "SELECT COUNT(*) FROM outbox") == [(0,)]
        assert daemon.stop() == 0
    finally:
        daemon.close()
    # user_id and phone, no email: delivered.
    assert emulator.contacts["u-1"] == {
        "user_id": "u-1",
        "phone": "+34600000000",
        "name_first": "Ann",
    }
    # No contact carries the timestamp field.
    sent = [contact for sync in emulator.syncs for contact in sync["contacts"]]
    assert len(sent) == 4 and not any("updated_at" in contact for contact in sent)
    # The booking with two guests is one request, with exactly them and its purchase.
    [booking] = [sync for sync in emulator.syncs if sync["purchase"] is not None]
    assert booking["contacts"] == guests
    assert booking["purchase"] == {**PURCHASE, "status": "check_in"}
    assert emulator.purchases == [booking["purchase"]]  # T-2 was never sent
    # The bad purchase status: a local dead letter (no HTTP status) with the reason.
    [(collection, key, http_status, reason)] = dead
    assert (collection, key, http_status) == ("bookings", "T-2", None)
    assert "status" in reason and '"shipped"' in reason
    # What the webhook sent back is in the store, by each contact's identity.
    assert [row[:3] for row in contacts] == [
        ("email", "c@example.com", "c@example.com"),
        ("user_id", "u-1", None),
        ("user_id", "u-2", "b@example.com"),
        ("user_id", "u-4", None),
    ]
    assert json.loads(contacts[1][3])["name_first"] == "Ann"
    assert json.loads(contacts[0][3])["name_first"] == "Cy"
    [(code, fields)] = purchase
    assert code == "T-1" and json.loads(fields)["price"] == 340
    assert json.loads(fields)["status"] == "check_in"


def test_a_new_timestamp_field_takes_effect_on_reload(tmp_path: Path, crm: EmulatorServer) -> None:
    emulator = crm.emulator
    assert isinstance(emulator, CrmEmulator)
    text = config(tmp_path, crm.base_url, free_port())
    daemon = DaemonProcess(
        tmp_path, text, env={"CRM_TOKEN": SECRET, "CRM_WEBHOOK_TOKEN": WEBHOOK_TOKEN}
    )
    try:
        daemon.start()
        drop_json(tmp_path / "drop/guests", "a", [{"user_id": "u-1", "updated_at": TS}])
        wait_until(lambda: "u-1" in emulator.contacts, what="the first contact")
        daemon.mark_log()
        daemon.config_path.write_text(text.replace('timestamp = "updated_at"', 'timestamp = "at"'))
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        later = {"user_id": "u-2", "at": TS + 1, "updated_at": "2024-01-01T00:00:00Z"}
        drop_json(tmp_path / "drop/guests", "b", [later])
        wait_until(lambda: "u-2" in emulator.contacts, what="the contact after the reload")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert emulator.contacts["u-1"] == {"user_id": "u-1"}
    assert emulator.contacts["u-2"] == {"user_id": "u-2", "updated_at": "2024-01-01T00:00:00Z"}
