"""Adapters against the real emulators over loopback: error mapping, limits, contracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from dropsync.adapters.base import OutgoingChange, batch_idempotency_key, change_idempotency_key
from dropsync.adapters.crm.adapter import CrmProvider, parse_options
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderThrottled,
    ProviderUnavailable,
    RetryableError,
)
from dropsync.adapters.favourites.adapter import FavouritesProvider
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.favourites.tokens import parse_tokens
from dropsync.adapters.http import parse_retry_after
from dropsync.adapters.options import OptionError

pytestmark = pytest.mark.anyio


def contact(i: int, **extra: Any) -> OutgoingChange:
    body = {"email": f"guest{i}@example.com", "name_first": f"G{i}", **extra}
    return OutgoingChange(
        i,
        "contacts",
        body["email"],
        1000 + i,
        False,
        body,
        change_idempotency_key("crm", "contacts", body["email"], 1000 + i),
    )


def crm(server: EmulatorServer, secret: str = "crm-secret") -> CrmProvider:
    return CrmProvider(
        "crm",
        server.base_url,
        parse_options({"account_id": "acc_1"}),
        secret,
        timeout_s=5,
        batch_max_items=None,
    )


def test_retry_after_both_forms() -> None:
    assert parse_retry_after("2") == 2.0
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after(format_datetime(later, usegmt=True))
    assert seconds is not None and 28 <= seconds <= 30
    assert parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0
    assert parse_retry_after("soon") is None


async def test_crm_push_is_accepted_with_the_job_id(crm_server: EmulatorServer) -> None:
    batch = [contact(i) for i in range(3)]
    async with crm(crm_server) as provider:
        result = await provider.push(batch, idempotency_key=batch_idempotency_key(batch))
    emulator = crm_server.emulator
    assert isinstance(emulator, CrmEmulator)
    assert result.state == "accepted" and result.status == 201
    assert result.remote_ref == emulator.jobs[0]
    assert set(emulator.contacts) == {c.key for c in batch}


async def test_a_repeated_idempotency_key_is_applied_once(crm_server: EmulatorServer) -> None:
    batch = [contact(1)]
    async with crm(crm_server) as provider:
        first = await provider.push(batch, idempotency_key="same")
        second = await provider.push(batch, idempotency_key="same")
    assert first.remote_ref == second.remote_ref
    assert list(crm_server.emulator.applied.values()) == [1]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, RetryableError),
        (503, ProviderThrottled),
        (429, ProviderThrottled),
    ],
)
async def test_status_codes_map_to_error_types(
    crm_server: EmulatorServer, status: int, error: type[Exception]
) -> None:
    crm_server.faults.update(status=status, count=1, retry_after="7")
    async with crm(crm_server) as provider:
        with pytest.raises(error) as raised:
            await provider.push([contact(1)], idempotency_key="k")
    if isinstance(raised.value, ProviderThrottled):
        assert raised.value.retry_after == 7


async def test_wrong_secret_is_an_auth_error_without_the_secret(
    crm_server: EmulatorServer,
) -> None:
    async with crm(crm_server, secret="not-the-secret-xyz") as provider:
        with pytest.raises(AuthError) as raised:
            await provider.push([contact(1)], idempotency_key="k")
    assert "not-the-secret-xyz" not in str(raised.value)


async def test_a_bad_contact_is_a_permanent_error_with_the_reason(
    crm_server: EmulatorServer,
) -> None:
    bad = OutgoingChange(9, "contacts", "x", 1, False, {"email": "no-at-sign"}, "k9")
    async with crm(crm_server) as provider:
        with pytest.raises(PermanentError) as raised:
            await provider.push([contact(1), bad], idempotency_key="k")
    assert raised.value.status == 422 and "not a valid address" in raised.value.reason


async def test_offline_and_dropped_connections_are_unavailable(
    crm_server: EmulatorServer,
) -> None:
    async with crm(crm_server) as provider:
        crm_server.faults.update(drop=1)
        with pytest.raises(ProviderUnavailable):
            await provider.push([contact(1)], idempotency_key="d")
        crm_server.stop()
        with pytest.raises(ProviderUnavailable):
            await provider.push([contact(2)], idempotency_key="e")
        crm_server.start()  # back online on the same port
        result = await provider.push([contact(2)], idempotency_key="e")
    assert result.status == 201
    # The dropped request had been applied; its retry under the same key would not be.
    assert (
        crm_server.emulator.applied[
            next(k for k in crm_server.emulator.applied if k.startswith("guest1@"))
        ]
        == 1
    )


async def test_purchase_goes_alone_and_missing_fields_are_refused_locally(
    crm_server: EmulatorServer,
) -> None:
    good = contact(
        5,
        purchase={"transaction_code": "t1", "price": 340, "currency": "USD", "product_uuid": "u1"},
    )
    bad = contact(6, purchase={"price": 1})
    async with crm(crm_server) as provider:
        reason = provider.check(bad)
        assert reason is not None and "transaction_code" in reason and "currency" in reason
        assert provider.check(good) is None
        await provider.push([contact(1), good, contact(7, purchase=None)], idempotency_key="p")
    emulator = crm_server.emulator
    assert isinstance(emulator, CrmEmulator)
    # One request for the plain contacts (a null purchase is no purchase), one for the sale.
    assert len(emulator.jobs) == 2 and emulator.purchases[0]["transaction_code"] == "t1"
    assert len(emulator.purchases) == 1
    assert "purchase" not in emulator.contacts["guest5@example.com"]
    assert "purchase" not in emulator.contacts["guest7@example.com"]


def test_options_are_validated_by_key() -> None:
    with pytest.raises(OptionError) as raised:
        parse_options({})
    assert raised.value.key == "account_id"
    with pytest.raises(OptionError) as raised:
        parse_options({"account_id": "a", "acount": 1})
    assert raised.value.key == "acount"
    with pytest.raises(OptionError):
        parse_tokens("{not json")
    assert favourite_options({"read_only": True}).read_only


async def test_favourites_round_trip_and_newer_action_date_wins(
    favourites_server: EmulatorServer,
) -> None:
    emulator = favourites_server.emulator
    assert isinstance(emulator, FavouritesEmulator)
    emulator.seed(
        "alice", [{"item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00.000Z"}]
    )
    provider = FavouritesProvider(
        "fav",
        favourites_server.base_url,
        favourite_options({}),
        {"alice": "tok-a", "bob": "tok-b"},
        5,
        None,
    )
    newer = OutgoingChange(
        1, "favourites", "alice:s1", 1704153600000, True, {"user": "alice", "item": "s1"}, "n"
    )
    older = OutgoingChange(
        2, "favourites", "bob:s2", 1000, False, {"user": "bob", "item": "s2"}, "o"
    )
    async with provider:
        await provider.push([newer, older], idempotency_key="k1")
        stale = OutgoingChange(
            3, "favourites", "alice:s1", 1600000000000, False, {"user": "alice", "item": "s1"}, "s"
        )
        await provider.push([stale], idempotency_key="k2")
        page = await provider.pull(None)
    pulled = {c.key: (c.updated_at, c.deleted) for c in page.changes}
    assert pulled == {"alice:s1": (1704153600000, True), "bob:s2": (1000, False)}
    assert emulator.items["alice"]["s1"]["actionDate"] == "2024-01-02T00:00:00.000Z"


async def test_favourites_unknown_token_is_auth_error(favourites_server: EmulatorServer) -> None:
    provider = FavouritesProvider(
        "fav",
        favourites_server.base_url,
        favourite_options({}),
        {"alice": "wrong-token-123"},
        5,
        None,
    )
    async with provider:
        with pytest.raises(AuthError) as raised:
            await provider.pull(None)
    assert "wrong-token-123" not in str(raised.value)


def test_emulator_control_over_http(crm_server: EmulatorServer) -> None:
    with httpx.Client(base_url=crm_server.base_url) as client:
        assert client.post("/_emulator/faults", json={"status": 503, "count": 1}).status_code == 200
        assert (
            client.post(
                "/account/acc_1/sync_data",
                json={},
                headers={"Authorization": "Token token=crm-secret"},
            ).status_code
            == 503
        )
        state = client.get("/_emulator/state").json()
        assert state["requests"][0]["status"] == 503
        assert client.post("/_emulator/reset").status_code == 200
        assert client.get("/_emulator/state").json()["requests"] == []
