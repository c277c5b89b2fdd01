"""The callback listener over loopback: the churn emulator's signed callbacks (and forged
ones), the CRM webhook at its token path, healthz, metrics, body limits, unconfirmed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from dropsync.adapters.churn.adapter import callback_signature, signed_payload
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.churn_support import (
    CALLBACK_SECRET,
    TOKEN,
    WEBHOOK_TOKEN,
    churn_config,
    crm_webhook_config,
    document,
    eventually,
    listener_emulator,
    merge,
    running,
)
from tests.support import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]

STATE_SQL = (
    "SELECT (SELECT group_concat(state) FROM deliveries), "
    "(SELECT group_concat(state) FROM delivered), (SELECT COUNT(*) FROM callback_signatures)"
)


@pytest.fixture(autouse=True)
def crm_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-secret")
    monkeypatch.setenv("CRM_WEBHOOK_TOKEN", WEBHOOK_TOKEN)


@pytest.fixture
def emulator(port: int) -> Iterator[EmulatorServer]:
    with EmulatorServer(listener_emulator(port)) as server:  # callbacks sent by the test
        yield server


def test_signature_rule_is_hmac_sha512_over_compact_json_in_received_order() -> None:
    import hashlib
    import hmac

    data = {"status": 200, "timestamp": 1708611945206}
    assert signed_payload(data) == b'{"status":200,"timestamp":1708611945206}'
    assert signed_payload({"b": "é", "a": 1}) == '{"b":"é","a":1}'.encode()
    expected = hmac.new(
        b"k", b'{"status":200,"timestamp":1708611945206}', hashlib.sha512
    ).hexdigest()
    assert callback_signature("k", data) == expected and len(expected) == 128


async def send(server: EmulatorServer, **spec: object) -> int:
    async with httpx.AsyncClient(timeout=20) as client:
        answer = await client.post(f"{server.base_url}/_emulator/send", json=spec)
    return int(answer.json()["status"])


async def test_forged_stale_and_replayed_callbacks_are_refused_and_change_nothing(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"),
            "an accepted upload, recorded",
        )
        before = await daemon.rows(STATE_SQL)
        assert before == [("accepted", "accepted,accepted,accepted", 0)]
        with capture_logs() as logs:
            assert await send(emulator, kind="sync-status", flip_bit=True) == 401
            assert await send(emulator, kind="sync-status", wrong_key=True) == 401
            assert await send(emulator, kind="sync-status", age_s=25 * 3600) == 401  # > a day
            assert await send(emulator, kind="sync-status", age_s=-600) == 401  # 10 min ahead
            assert (
                await send(
                    emulator,
                    kind="brand",
                    flip_bit=True,
                    data={"stopChurnBrandId": 1, "brandIdFromClient": "b"},
                )
                == 401
            )
        assert await daemon.rows(STATE_SQL) == before
        refusals = [e for e in logs if e["event"] == "callback_refused"]
        assert [e["status"] for e in refusals] == [401] * 5
        assert [e["reason"] for e in refusals[2:4]] == [
            "data.timestamp is older than max_callback_age_s",
            "data.timestamp is in the future, beyond max_clock_skew_s",
        ]
        assert CALLBACK_SECRET not in repr(logs) and TOKEN not in repr(logs)
        assert await send(emulator, kind="sync-status") == 200
        after = await daemon.rows(STATE_SQL)
        assert after == [("confirmed", "confirmed,confirmed,confirmed", 1)]
        assert await send(emulator, kind="sync-status", replay=True) == 401
        assert await daemon.rows(STATE_SQL) == after
        # A brand callback applied twice (a new signature each time: same mapping) is harmless.
        brand = {"stopChurnBrandId": 15, "brandIdFromClient": "550e8400"}
        assert await send(emulator, kind="brand", data=brand) == 200
        assert await send(emulator, kind="brand", replay=True) == 401
        assert await daemon.rows("SELECT client_brand_id, stop_churn_brand_id FROM brands") == [
            ("550e8400", 15)
        ]


async def test_a_callback_hours_late_confirms_the_uploads_sent_before_its_timestamp(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    # The tool's sync ended while the daemon was down: its callback arrives late, signed with
    # the sync's timestamp. It is taken (up to max_callback_age_s, a day by default) and
    # confirms the uploads attempted before that timestamp, not those sent after.
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"), "recorded"
        )
        # That upload was sent three hours ago; a newer one, an hour ago.
        hour = 3_600_000
        await daemon.store.transact(
            lambda db: db.execute(
                "UPDATE deliveries SET attempted_at = attempted_at - ?", (3 * hour,)
            )
        )
        await merge(daemon.store, config, [document("users", 10, "x", ts=1_800_000_000_000)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT COUNT(*) FROM deliveries HAVING COUNT(*) = 2"), "sent"
        )
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"), "recorded"
        )
        await daemon.store.transact(
            lambda db: db.execute(
                "UPDATE deliveries SET attempted_at = attempted_at - ? WHERE id = 2", (hour,)
            )
        )
        assert await send(emulator, kind="sync-status", age_s=2 * 3600) == 200  # 2 h late
        states = await daemon.rows("SELECT id, state FROM deliveries ORDER BY id")
        assert states == [(1, "confirmed"), (2, "accepted")]
        assert await send(emulator, kind="sync-status", replay=True) == 401
        assert await send(emulator, kind="sync-status", age_s=-120) == 200  # 2 min ahead: ok
        states = await daemon.rows("SELECT id, state FROM deliveries ORDER BY id")
        assert states == [(1, "confirmed"), (2, "confirmed")]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'{"data": 1}',
        b'{"data": {}, "signature": 5}',
        b"{" * 100_000,
        b'{"data": {"status": NaN}, "signature": "00"}',
        b"1e400",
    ],
)
async def test_any_body_is_answered_and_the_listener_survives(
    tmp_path: Path, port: int, emulator: EmulatorServer, body: bytes
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    async with running(config, port) as daemon:
        for path in (
            "/callbacks/churn/sync-status",
            "/callbacks/churn/brand",
            f"/webhooks/crm/{WEBHOOK_TOKEN}",
        ):
            answer = await daemon.post(path, body, **{"content-type": "application/json"})
            assert answer.status_code in (400, 401, 404)
        assert (
            await daemon.post("/callbacks/churn/sync-status", b"x" * (1 << 20 | 1))
        ).status_code == 413
        assert (await daemon.post("/callbacks/churn/sync-status/nobody", b"{}")).status_code == 404
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.url + "/healthz")).status_code == 200
        assert await daemon.rows("SELECT COUNT(*) FROM callback_signatures") == [(0,)]


async def test_crm_webhook_at_the_token_path_confirms_its_batch(tmp_path: Path, port: int) -> None:
    crm = CrmEmulator({"acc_1": "crm-secret"}, webhook_delay_s=0.05)
    with EmulatorServer(crm) as server:
        config = crm_webhook_config(tmp_path, server.base_url, port)
        async with running(config, port) as daemon:
            # A wrong token: 404, nothing changes.
            wrong = await daemon.post("/webhooks/crm/not-the-token", b'{"_id": "x"}')
            assert wrong.status_code == 404
            import hashlib

            from dropsync.store.merge import Change

            body = '{"email":"a@example.com","user_id":"u1"}'
            change = Change(
                "contacts",
                "a@example.com",
                body,
                5,
                False,
                "drop",
                hashlib.sha256(body.encode()).hexdigest()[:32],
            )
            await merge(daemon.store, config, [change])
            daemon.supervisor.wake(["crm"])
            rows = await eventually(
                lambda: daemon.rows(
                    "SELECT state, remote_ref FROM deliveries WHERE state = 'confirmed'"
                ),
                "the webhook confirms the batch",
            )
            assert rows[0][1] == crm.jobs[0]
            assert await daemon.rows("SELECT state FROM delivered") == [("confirmed",)]
            assert await daemon.rows("SELECT email, user_id, job_id FROM crm_contacts") == [
                ("a@example.com", "u1", crm.jobs[0])
            ]
            # Contacts of another shape are ignored, never a crash.
            odd = await daemon.post(
                f"/webhooks/crm/{WEBHOOK_TOKEN}",
                b'{"_id": "%s", "contacts": 5}' % crm.jobs[0].encode(),
            )
            assert odd.status_code == 200
            # An unknown job is answered 200 (so the CRM stops retrying) and changes nothing.
            unknown = await daemon.post(f"/webhooks/crm/{WEBHOOK_TOKEN}", b'{"_id": "nope"}')
            assert unknown.status_code == 200
            before = await daemon.rows("SELECT COUNT(*) FROM crm_contacts")
            again = await daemon.post(
                "/webhooks/crm/" + WEBHOOK_TOKEN[:-1] + "x", b'{"_id": "%s"}' % crm.jobs[0].encode()
            )
            assert again.status_code == 404
            assert await daemon.rows("SELECT COUNT(*) FROM crm_contacts") == before


async def test_metrics_parse_and_healthz_answers(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, provider={"brand_id": 15, "brand_field": None}
    )
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(2)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM outbox_pending WHERE pending = 0"),
            "a delivery, recorded",
        )
        async with httpx.AsyncClient() as client:
            health = await client.get(daemon.url + "/healthz")
            metrics = await client.get(daemon.url + "/metrics")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "providers": {"churn": "online"}}
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        assert samples[("dropsync_pending", (("provider", "churn"),))] == 0
        assert samples[("dropsync_deliveries", (("provider", "churn"), ("state", "accepted")))] == 1
        assert (
            samples[("dropsync_delivery_items", (("provider", "churn"), ("state", "accepted")))]
            == 2
        )
        assert ("dropsync_last_success_timestamp_seconds", (("provider", "churn"),)) in samples
        # The store gone: 503.
        config.store_path.rename(config.store_path.with_suffix(".moved"))
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.url + "/healthz")).status_code == 503
        config.store_path.with_suffix(".moved").rename(config.store_path)


async def test_unconfirmed_batches_are_shown_and_resync_sends_exactly_those(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path,
        emulator.base_url,
        port,
        provider={"brand_id": 15, "brand_field": None, "confirm_timeout_s": 0.001},
    )
    churn = emulator.emulator
    assert isinstance(churn, ChurnEmulator)
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", i, "x") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows(
                "SELECT unconfirmed, unconfirmed_items FROM pending_by_provider "
                "WHERE unconfirmed = 1"
            ),
            "the batch is unconfirmed",
        )
        assert await daemon.rows("SELECT unconfirmed_items FROM pending_by_provider") == [(3,)]
    toml = tmp_path / "dropsync.toml"
    toml.write_text(
        f"""
[store]
path = "{config.store_path}"
[drop]
path = "{tmp_path / "drop"}"
[listener]
port = {port}
[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = ["churn"]
[providers.churn]
kind = "churn"
base_url = "{emulator.base_url}"
secret_env = "CHURN_TOKEN"
callback_secret_env = "CHURN_CALLBACK_SECRET"
brand_id = 15
confirm_timeout_s = 0.001
"""
    )
    done = await anyio.to_thread.run_sync(
        partial(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "dropsync.daemon.cli",
                "resync",
                "churn",
                "--unconfirmed",
                "--config",
                str(toml),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    )
    assert done.returncode == 0, done.stderr
    assert "queued 3 record(s) of 1 unconfirmed batch(es)" in done.stdout
    async with running(config, port) as daemon:
        await eventually(lambda: len(churn.uploads) == 2, "sent again")
        assert sorted(churn.applied.values()) == [2, 2, 2]
        states = await daemon.rows("SELECT state, error FROM deliveries ORDER BY id")
        assert states[0][0] == "failed" and "confirm_timeout_s" in states[0][1]


async def test_garbage_and_slow_requests_do_not_take_the_listener_down(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, extra={"listener": {"request_timeout_s": 0.5}}
    )
    async with running(config, port) as daemon:
        with capture_logs() as logs:
            for garbage in (
                b"\x00\xff garbage\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
            ):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await stream.send(garbage)
                with anyio.move_on_after(5):
                    await stream.receive()
                await stream.aclose()
            # A body that never finishes arriving is answered 408.
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(
                b"POST /callbacks/churn/brand HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
            with anyio.fail_after(20):
                answer = await stream.receive()
            await stream.aclose()
            assert answer.startswith(b"HTTP/1.1 408")
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.url + "/healthz")).status_code == 200
        assert all(isinstance(entry, dict) for entry in logs)


async def test_a_slow_client_does_not_stop_a_valid_callback(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    """Connections whose heads or bodies trickle in a byte at a time, more than
    max_connections of them, and no deadline to save the day: the valid callback is still
    taken."""
    config = churn_config(
        tmp_path,
        emulator.base_url,
        port,
        provider={"brand_id": 15, "brand_field": None},
        extra={"listener": {"max_connections": 4, "request_timeout_s": 600}},
    )
    async with running(config, port) as daemon:
        await merge(daemon.store, config, [document("users", 1, "x")])
        daemon.supervisor.wake(["churn"])
        await eventually(
            lambda: daemon.rows("SELECT 1 FROM deliveries WHERE state = 'accepted'"), "accepted"
        )
        slow = []
        head = b"POST /callbacks/churn/sync-status HTTP/1.1\r\nHost: x\r\n"
        with capture_logs() as logs:
            for i in range(12):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                # Half of them send a whole head, then a body that never finishes.
                await stream.send(head + (b"Content-Length: 100\r\n\r\n{" if i >= 6 else b""))
                slow.append(stream)
            for stream in slow:  # one more byte each: still no whole request
                with contextlib.suppress(anyio.BrokenResourceError, OSError):
                    await stream.send(b"X")
            assert await send(emulator, kind="sync-status") == 200
        assert await daemon.rows("SELECT state FROM deliveries") == [("confirmed",)]
        closed = [e for e in logs if e["event"] == "listener_slow_clients_closed"]
        assert closed and closed[0]["reason"] == "more connections than max_connections"
        for stream in slow:
            await stream.aclose()


async def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, extra={"listener": {"request_timeout_s": 0.3}}
    )
    head = b"POST /callbacks/churn/brand HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 100_000
    async with running(config, port) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        answer = b""
        with anyio.fail_after(60):  # bounds a hang only: the listener must close it
            for byte in head:
                try:
                    await stream.send(bytes([byte]))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    break
                with anyio.move_on_after(0.05):
                    answer += await stream.receive()
                if answer:
                    break
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 408")
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.url + "/healthz")).status_code == 200


async def test_a_head_over_16_kb_is_refused(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    async with running(config, port):
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (20 << 10))
        with anyio.fail_after(20):
            answer = await stream.receive()
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(
    ("host", "condition", "reason"),
    [
        ("no-such-host.invalid", "address unavailable", "the host name does not resolve"),
        ("192.0.2.1", "address unavailable", "not an address of this machine"),  # TEST-NET-1
    ],
)
async def test_an_address_that_cannot_be_had_is_named_in_words(
    host: str, condition: str, reason: str
) -> None:
    from dropsync.daemon.inbound.listener_server import bind, bind_problem

    with pytest.raises(OSError) as raised:
        await bind(host, 0)
    found = bind_problem(raised.value)
    assert found[0] == condition and found[1].startswith(reason)
