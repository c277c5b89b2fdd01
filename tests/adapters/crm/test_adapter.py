"""The CRM adapter as the document (seed 001) writes it, against its emulator over loopback:
an identity is email or user_id, only the contact goes out, bookings are requests of their
own, purchases are checked before they are sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dropsync.adapters.base import (
    NeedsCollections,
    OutgoingChange,
    batch_idempotency_key,
    change_idempotency_key,
)
from dropsync.adapters.crm.adapter import CrmProvider, parse_options
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.crm.webhook import returned_contacts, returned_purchases
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import PermanentError

pytestmark = pytest.mark.anyio

PURCHASE = {"transaction_code": "T-1", "price": 340, "currency": "USD", "product_uuid": "p-1"}


def record(
    key: str,
    body: dict[str, Any],
    *,
    collection: str = "contacts",
    updated_at: int = 1_700_000_000_000,
) -> OutgoingChange:
    return OutgoingChange(
        abs(hash(key)) % 10_000,
        collection,
        key,
        updated_at,
        False,
        body,
        change_idempotency_key("crm", collection, key, updated_at),
    )


def crm(server: EmulatorServer, **options: Any) -> CrmProvider:
    provider = CrmProvider(
        "crm",
        server.base_url,
        parse_options({"account_id": "acc_1", **options}),
        "crm-secret",
        timeout_s=5,
        batch_max_items=None,
    )
    provider.attach_collections({"contacts": "updated_at", "bookings": "changed_at"})
    return provider


def emulator_of(server: EmulatorServer) -> CrmEmulator:
    emulator = server.emulator
    assert isinstance(emulator, CrmEmulator)
    return emulator


async def push(provider: CrmProvider, batch: list[OutgoingChange]) -> None:
    for change in batch:
        assert provider.check(change) is None, change
    await provider.push(batch, idempotency_key=batch_idempotency_key(batch))


async def test_a_contact_with_user_id_and_phone_and_no_email_is_delivered(
    crm_server: EmulatorServer,
) -> None:
    guest = record("u-42", {"user_id": "u-42", "phone": "+34600000000", "updated_at": 5})
    async with crm(crm_server) as provider:
        await push(provider, [guest])
    assert emulator_of(crm_server).contacts == {
        "u-42": {"user_id": "u-42", "phone": "+34600000000"}
    }


async def test_a_contact_with_neither_email_nor_user_id_is_refused_naming_both(
    crm_server: EmulatorServer,
) -> None:
    async with crm(crm_server) as provider:
        for body in ({"phone": "+34600000000"}, {"email": "", "user_id": None}, {"user_id": True}):
            reason = provider.check(record("x", body))
            assert reason is not None and "email" in reason and "user_id" in reason
        assert provider.check(record("n", {"user_id": 7})) is None  # a number is an id too


async def test_the_collection_timestamp_is_not_sent_unless_send_timestamp(
    crm_server: EmulatorServer,
) -> None:
    body = {"email": "a@example.com", "name_first": "A", "updated_at": 1_700_000_000_000}
    async with crm(crm_server) as provider:
        assert isinstance(provider, NeedsCollections)
        await push(provider, [record("a@example.com", body)])
    assert emulator_of(crm_server).contacts["a@example.com"] == {
        "email": "a@example.com",
        "name_first": "A",
    }
    assert body["updated_at"] == 1_700_000_000_000  # the record itself is untouched
    async with crm(crm_server, send_timestamp=True) as provider:
        await push(provider, [record("a@example.com", body, updated_at=1_700_000_000_001)])
    assert emulator_of(crm_server).contacts["a@example.com"]["updated_at"] == 1_700_000_000_000


async def test_a_nested_timestamp_is_left_out_of_the_part_that_holds_it(
    crm_server: EmulatorServer,
) -> None:
    async with crm(crm_server) as provider:
        provider.attach_collections({"contacts": "meta.at", "sales": "purchase.at"})
        await push(
            provider,
            [
                record("a@example.com", {"email": "a@example.com", "meta": {"at": 5, "k": 1}}),
                record(
                    "b@example.com",
                    {"email": "b@example.com", "purchase": {**PURCHASE, "at": 5}},
                    collection="sales",
                ),
            ],
        )
    emulator = emulator_of(crm_server)
    assert emulator.contacts["a@example.com"] == {"email": "a@example.com", "meta": {"k": 1}}
    assert emulator.purchases == [PURCHASE]


async def test_a_booking_with_two_guests_is_one_request_of_its_own(
    crm_server: EmulatorServer,
) -> None:
    guests = [
        {"email": "ann@example.com", "name_first": "Ann"},
        {"user_id": "u-7", "phone": "+4930123"},
    ]
    booking = record(
        "T-1",
        {"contacts": guests, "purchase": {**PURCHASE, "status": "check_in"}, "changed_at": 9},
        collection="bookings",
    )
    plain = record("c@example.com", {"email": "c@example.com", "updated_at": 3})
    async with crm(crm_server) as provider:
        await push(provider, [plain, booking])
    emulator = emulator_of(crm_server)
    assert len(emulator.syncs) == 2
    [sale] = [s for s in emulator.syncs if s["purchase"] is not None]
    assert sale["contacts"] == guests
    assert sale["purchase"] == {**PURCHASE, "status": "check_in"}
    [alone] = [s for s in emulator.syncs if s["purchase"] is None]
    assert alone["contacts"] == [{"email": "c@example.com"}]


def booking_body(contacts: Any = None, **purchase: Any) -> dict[str, Any]:
    return {
        "contacts": [{"email": "ann@example.com"}] if contacts is None else contacts,
        "purchase": {key: value for key, value in {**PURCHASE, **purchase}.items() if value != "-"},
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (booking_body([]), "at least one contact"),
        (booking_body([{"email": f"g{i}@example.com"} for i in range(1001)]), "1000"),
        (booking_body([{"email": "a@example.com"}, {"phone": "1"}]), "contacts[1]"),
        (booking_body([{"email": "a@example.com"}, "b@example.com"]), "contacts[1]"),
        (booking_body(transaction_code="-"), "transaction_code"),
        (booking_body(price="-"), "price"),
        (booking_body(currency="-"), "currency"),
        (booking_body(product_uuid="-"), "UUID"),
        (booking_body(currency="US"), "three letters"),
        (booking_body(currency="EURO"), "three letters"),
        (booking_body(currency="U$D"), "three letters"),
        (booking_body(currency=840), "three letters"),
        (booking_body(status="shipped"), "status"),
        (booking_body(status=None), "status"),
        ({"contacts": [{"email": "a@example.com"}], "purchase": ["T-1"]}, "JSON object"),
        ({"contacts": {"email": "a@example.com"}, "purchase": PURCHASE}, "contacts array"),
    ],
)
async def test_a_bad_booking_is_refused_locally_with_the_reason(
    crm_server: EmulatorServer, body: dict[str, Any], words: str
) -> None:
    async with crm(crm_server) as provider:
        reason = provider.check(record("T-1", body, collection="bookings"))
    assert reason is not None and words in reason, reason


@pytest.mark.parametrize(
    "purchase",
    [
        {**PURCHASE, "status": "confirmed"},
        {**PURCHASE, "currency": "eur"},  # ISO 4217 writes codes in capitals; any case is sent
        {**PURCHASE, "UUID": "p-2", "product_uuid": "-"},
    ],
)
async def test_good_purchases_pass_the_check_and_the_emulator(
    crm_server: EmulatorServer, purchase: dict[str, Any]
) -> None:
    booking = booking_body(**purchase)
    async with crm(crm_server) as provider:
        await push(provider, [record("T-1", booking, collection="bookings")])
        await push(
            provider, [record("a@x.io", {"email": "a@x.io", "purchase": booking["purchase"]})]
        )
    assert emulator_of(crm_server).purchases == [booking["purchase"]] * 2


async def test_a_contact_with_a_bad_purchase_status_is_refused_as_before_with_its_reason(
    crm_server: EmulatorServer,
) -> None:
    async with crm(crm_server) as provider:
        reason = provider.check(
            record("a@example.com", {"email": "a@x.io", "purchase": {**PURCHASE, "status": "x"}})
        )
    assert reason is not None and "status" in reason and "check_in" in reason


async def test_the_emulator_refuses_what_the_check_refuses(crm_server: EmulatorServer) -> None:
    async with crm(crm_server) as provider:
        bad = record("T-1", booking_body(status="shipped"), collection="bookings")
        with pytest.raises(PermanentError) as raised:
            await provider.push([bad], idempotency_key="k")
    assert raised.value.status == 422 and "status" in raised.value.reason


async def test_each_request_of_a_batch_keeps_its_key_when_the_batch_is_split(
    crm_server: EmulatorServer,
) -> None:
    """A batch cut in halves after a refusal sends its sales again under the same keys:
    the CRM takes each one once."""
    sales = [
        record(f"T-{i}", booking_body(transaction_code=f"T-{i}"), collection="bookings")
        for i in range(3)
    ]
    plain = record("c@example.com", {"email": "c@example.com"})
    async with crm(crm_server) as provider:
        await push(provider, [plain, *sales])
        await push(provider, sales[1:])
    emulator = emulator_of(crm_server)
    assert [p["transaction_code"] for p in emulator.purchases] == ["T-0", "T-1", "T-2"]


def test_what_the_webhook_sends_back_is_read_by_identity() -> None:
    body = json.loads(
        '{"_id": "j", "contacts": ['
        '{"_id": "c1", "user_id": 7, "email": "a@x.io", "name_first": "A"},'
        '{"email": "b@x.io"}, {"email": 5, "user_id": true}, {"user_id": "  "},'
        '{"user_id": "\\ud800"}, {"user_id": "u-3", "x": "\\ud800"},'
        '{"user_id": "u-4", "x": 1e400}, [], null],'
        '"purchase": [{"transaction_code": "T-1", "_id": "p1", "price": 340}, {"price": 1}]}'
    )
    contacts = returned_contacts(body)
    assert [(c.identity, c.contact, c.email, c.user_id, c.crm_id) for c in contacts] == [
        ("user_id", "7", "a@x.io", "7", "c1"),
        ("email", "b@x.io", "b@x.io", None, None),
        ("user_id", "u-3", None, "u-3", None),
        ("user_id", "u-4", None, "u-4", None),
    ]
    assert json.loads(contacts[0].fields or "") == body["contacts"][0]
    assert contacts[2].fields == '{"user_id":"u-3","x":"\\ud800"}'  # escaped: UTF-8 cannot
    assert contacts[3].fields is None  # 1e400 cannot be written back as JSON
    assert returned_purchases(body) == [
        ("T-1", "p1", '{"transaction_code":"T-1","_id":"p1","price":340}')
    ]
    assert returned_purchases({"purchase": {"transaction_code": 9}}) == [
        ("9", None, '{"transaction_code":9}')
    ]
    assert returned_contacts([]) == []
    assert returned_purchases("x") == []
