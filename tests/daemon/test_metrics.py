"""``/metrics`` in the daemon's own loop (the supervisor and the listener, real HTTP on
loopback): what a provider that cannot be reached shows, callbacks refused by reason, a store
that cannot be read; and the parts alone: pauses, paused users, collection labels, outcomes.

The instruments are the process's (one registry, never made again): a test reads what its
work added to them, not their value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderError,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
    RetryableError,
    UnexpectedAnswer,
)
from dropsync.adapters.registrations.emulator import RegistrationsEmulator
from dropsync.daemon import metrics
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery.providers import ProviderSupervisor
from dropsync.daemon.inbound.listener import Listener
from dropsync.daemon.inbound.metrics_scrape import PAUSE_LABELS, render_metrics
from dropsync.store import callbacks
from dropsync.store.handle import Store
from dropsync.store.merge import Change
from dropsync.store.states import ProviderState

from tests.churn_support import (
    churn_config,
    crm_webhook_config,
    document,
    eventually,
    merge,
    running,
)
from tests.metrics_support import families, samples, value
from tests.support import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]


async def _scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(url + "/metrics")
    assert answer.status_code == 200
    return answer.text


async def test_a_provider_that_cannot_be_reached_shows_its_age_state_and_failed_requests(
    tmp_path: Path, port: int
) -> None:
    closed = free_port()  # nobody listens there
    config = churn_config(
        tmp_path, f"http://127.0.0.1:{closed}", port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        before = samples(await _scrape(daemon.url))
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM providers WHERE state = 'offline'"),
            "the provider offline",
        )
        await anyio.sleep(0.01)  # the oldest entry is older than the clock's last millisecond
        found = samples(await _scrape(daemon.url))
    failed = "dropsync_delivery_requests_total"
    # At least the attempt that made it offline (its backoff may have let another go by).
    assert value(found, failed, provider="churn", outcome="unavailable") >= (
        value(before, failed, provider="churn", outcome="unavailable") + 1
    )
    assert value(found, "dropsync_pending", provider="churn") == 3
    assert value(found, "dropsync_oldest_pending_age_seconds", provider="churn") > 0
    states = {
        state: value(found, "dropsync_provider_state", provider="churn", state=state)
        for state in ProviderState
    }
    assert states == {s: (1 if s == ProviderState.OFFLINE else 0) for s in ProviderState}
    delivered = "dropsync_records_delivered_total"
    assert value(found, delivered, provider="churn") == value(before, delivered, provider="churn")


async def test_refused_callbacks_are_counted_by_route_and_reason(tmp_path: Path, port: int) -> None:
    config = churn_config(tmp_path, "http://127.0.0.1:9", port)
    async with running(config, port) as daemon:
        before = samples(await _scrape(daemon.url))
        assert (await daemon.post("/callbacks/churn/sync-status/churn", b"[]")).status_code == 400
        unsigned = b'{"data": {"status": 200, "timestamp": 1}, "signature": "00"}'
        assert (
            await daemon.post("/callbacks/churn/sync-status/churn", unsigned)
        ).status_code == 401
        assert (await daemon.post("/callbacks/churn/sync-status/nobody", b"{}")).status_code == 404
        big = b"x" * ((1 << 20) + 1)
        assert (await daemon.post("/callbacks/churn/brand/churn", big)).status_code == 413
        found = samples(await _scrape(daemon.url))

    def added(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    refused = "dropsync_callbacks_refused_total"
    assert added(refused, route="sync-status", reason="bad_request") == 1
    assert added(refused, route="sync-status", reason="unauthorized") == 1
    assert added(refused, route="sync-status", reason="not_found") == 1
    assert added(refused, route="brand", reason="too_large") == 1
    assert added("dropsync_callbacks_received_total", route="sync-status") == 3
    assert added("dropsync_callbacks_received_total", route="brand") == 1
    reasons = {dict(labels)["reason"] for name, labels in found if name == refused}
    assert reasons <= set(metrics.REFUSALS)


async def test_a_store_that_cannot_be_read_is_a_gauge_not_a_failed_scrape(
    tmp_path: Path, port: int
) -> None:
    config = churn_config(tmp_path, "http://127.0.0.1:9", port)
    async with await Store.open(config.store_path) as store:
        listener = Listener(store, config, wake=lambda names: None, adapter=lambda name: None)
        transport = httpx.ASGITransport(app=listener.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://dropsync") as client:
            answer = await client.get("/metrics")
            assert answer.status_code == 200
            assert value(samples(answer.text), "dropsync_store_readable") == 1
            store.path = tmp_path / "gone.db"  # where the listener reads it: nothing there
            answer = await client.get("/metrics")
            store.path = config.store_path
    assert answer.status_code == 200
    found = families(answer.text)
    assert value(samples(answer.text), "dropsync_store_readable") == 0
    assert "dropsync_pending" not in found  # nothing read is shown as if it were
    assert "dropsync_records_delivered" in found and "process_resident_memory_bytes" in found


def test_each_pause_condition_is_a_series_of_0_or_1() -> None:
    pauses: dict[tuple[str, str], Any] = {
        ("ingest", "store busy"): {},
        ("inbox", "store busy"): {},
        ("listener", "address in use"): {},
        ("retention", "something new"): {},
    }
    found = samples(render_metrics(None, pauses)[0].decode())
    paused = {label: value(found, "dropsync_paused", condition=label) for label in PAUSE_LABELS}
    assert paused == {
        "store_busy": 1,
        "disk_full": 0,
        "store_unavailable": 0,
        "drop_folder_missing": 0,
        "listener": 1,
        "other": 1,
    }
    assert {dict(labels)["condition"] for name, labels in found if name == "dropsync_paused"} == (
        set(PAUSE_LABELS)
    )


async def test_paused_users_are_read_from_the_provider_users_view(
    tmp_path: Path,
) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        snapshot = await store.call(callbacks.metrics_snapshot)
        assert snapshot["paused_users"] == []  # no lanes yet

        def lanes(db: Any) -> None:
            # Lanes as the favourites provider leaves them (provider_users reads these).
            db.executemany(
                "INSERT INTO provider_lanes (provider, lane, state, since, updated_at) "
                "VALUES (?, ?, ?, 1, 1)",
                [
                    ("fav", "alice", "auth-failed"),
                    ("fav", "bob", "no-token"),
                    ("fav", "carol", "no-token"),  # nothing waits for her
                    ("fav", "dave", "active"),
                ],
            )
            db.executemany(
                "INSERT INTO outbox (provider, collection, key, updated_at, enqueued_at, "
                "held_lane) VALUES ('fav', 'favourites', ?, 1, 1, 'bob')",
                [("bob:a",), ("bob:b",)],
            )

        await store.transact(lanes)
        snapshot = await store.call(callbacks.metrics_snapshot)
    assert snapshot["paused_users"] == [("fav", 2)]
    text = render_metrics({**snapshot, "providers": [("fav", "online", 0, 0, None, 0, None)]}, {})[
        0
    ].decode()
    assert value(samples(text), "dropsync_paused_users", provider="fav") == 2


def test_collection_labels_are_bounded() -> None:
    configured = {"users"}
    assert metrics.collection_label("users", configured) == "users"
    labels = {metrics.collection_label(f"day-{i:04d}", configured) for i in range(1000)}
    assert len(labels) <= metrics.MAX_UNCONFIGURED + 1
    assert metrics.OTHER_COLLECTION in labels
    assert metrics.collection_label("users", configured) == "users"  # configured: always
    for unfit in ("bad\udcff", "a\nb", "", "x" * 500):
        assert metrics.collection_label(unfit, configured) == metrics.OTHER_COLLECTION


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ProviderUnavailable("x"), "unavailable"),
        (ProviderThrottled("x"), "throttled"),
        (UnexpectedAnswer("x"), "unexpected_answer"),
        (ProviderMisconfigured("x"), "misconfigured"),
        (RetryableError("x"), "retryable"),
        (AuthError("x"), "auth_failed"),
        (PermanentError("x"), "refused"),
        (ProviderError("x"), "error"),
    ],
)
async def test_a_request_is_counted_by_its_outcome_and_timed(
    error: ProviderError, outcome: str
) -> None:
    assert outcome in metrics.REQUEST_OUTCOMES
    name = f"test-{outcome}"

    async def fail() -> None:
        raise error

    async def succeed() -> int:
        return 7

    with pytest.raises(type(error)):
        await metrics.timed_request(name, fail)
    assert await metrics.timed_request(name, succeed) == 7
    assert metrics.REQUESTS.labels(name, outcome)._value.get() == 1
    assert metrics.REQUESTS.labels(name, "ok")._value.get() == 1
    text = render_metrics(None, {})[0].decode()
    count = "dropsync_delivery_request_duration_seconds_count"
    assert value(samples(text), count, provider=name) == 2


def _registrations(base_url: str) -> Config:
    return parse_config(
        {
            "providers": {
                "lenos": {
                    "kind": "registrations",
                    "base_url": base_url,
                    "username": "fp-bot",
                    "event_id": "ev-2026",
                    "secret_env": "REGISTRATIONS_PASSWORD",
                    "pull_interval_s": 0.05,
                    "backoff_base_s": 0.05,
                    "backoff_cap_s": 0.1,
                }
            }
        },
        "<test>",
    )


async def test_pulls_count_their_pages_changes_and_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRATIONS_PASSWORD", "pull-test-password")
    requests, changes = metrics.PULL_REQUESTS, metrics.PULLED
    with EmulatorServer(RegistrationsEmulator(password="pull-test-password")) as server:
        emulator = server.emulator
        assert isinstance(emulator, RegistrationsEmulator)
        emulator.seed(participants=40, sessions=3)
        config = _registrations(server.base_url)
        ok_before = requests.labels("lenos", "ok")._value.get()
        changes_before = changes.labels("lenos")._value.get()
        async with await Store.open(tmp_path / "s.db") as store:
            supervisor = ProviderSupervisor(store, config)
            async with anyio.create_task_group() as tg:
                tg.start_soon(supervisor.run)
                await eventually(
                    lambda: changes.labels("lenos")._value.get() >= changes_before + 43,
                    "the first pull counted",
                )
                tg.cancel_scope.cancel()
    # participants and sessions: a page each at least
    assert requests.labels("lenos", "ok")._value.get() >= ok_before + 2

    closed = _registrations(f"http://127.0.0.1:{free_port()}")
    failed_before = requests.labels("lenos", "unavailable")._value.get()
    async with await Store.open(tmp_path / "t.db") as store:
        supervisor = ProviderSupervisor(store, closed)
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            await eventually(
                lambda: requests.labels("lenos", "unavailable")._value.get() > failed_before,
                "a failed pull counted",
            )
            tg.cancel_scope.cancel()


async def test_records_confirmed_by_a_webhook_are_counted_once(
    tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-secret")
    monkeypatch.setenv("CRM_WEBHOOK_TOKEN", "wh-token-metrics-0123456789")
    crm = CrmEmulator({"acc_1": "crm-secret"}, webhook_delay_s=0.05)
    confirmed = metrics.CONFIRMED.labels("crm")
    before = confirmed._value.get()
    with EmulatorServer(crm) as server:
        config = crm_webhook_config(tmp_path, server.base_url, port)
        async with running(config, port) as daemon:
            contacts = [
                Change(
                    "contacts", f"c{i}@x.org", f'{{"email": "c{i}@x.org"}}', 5, False, "drop", ""
                )
                for i in range(3)
            ]
            await merge(daemon.store, config, contacts)
            daemon.supervisor.wake(["crm"])
            # Counted once the webhook's transaction is done (its commit is seen a moment before).
            await eventually(lambda: confirmed._value.get() >= before + 3, "the confirmation")
            assert await daemon.rows("SELECT state FROM deliveries") == [("confirmed",)]
            assert confirmed._value.get() == before + 3
            # The same job's success told again confirms nothing more.
            again = {"_id": crm.jobs[0], "status": "processed"}
            answer = await daemon.post(
                "/webhooks/crm/wh-token-metrics-0123456789", orjson.dumps(again)
            )
            assert answer.json()["deliveries"] == 0
            assert confirmed._value.get() == before + 3
    assert metrics.DELIVERED.labels("crm")._value.get() >= 3
