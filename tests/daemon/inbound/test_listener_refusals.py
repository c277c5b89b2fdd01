"""Requests the listener refuses: never a 500 for what a caller sends, an unexpected
error logged with its type and traceback, and a flood of refusals summarised in the log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.churn.adapter import callback_signature
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.daemon.inbound.log_repeats import Repeats
from structlog.testing import capture_logs

from tests.churn_support import (
    CALLBACK_SECRET,
    WEBHOOK_TOKEN,
    churn_config,
    listener_emulator,
    running,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]


@pytest.fixture(autouse=True)
def crm_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "crm-secret")
    monkeypatch.setenv("CRM_WEBHOOK_TOKEN", WEBHOOK_TOKEN)


@pytest.fixture
def emulator(port: int) -> Iterator[EmulatorServer]:
    with EmulatorServer(listener_emulator(port)) as server:
        yield server


def signed(data: dict[str, Any]) -> bytes:
    """A callback body signed with the right key."""
    body = {"data": data, "signature": callback_signature(CALLBACK_SECRET, data)}
    return json.dumps(body, ensure_ascii=False).encode()


def crm_provider(base_url: str) -> dict[str, Any]:
    return {
        "crm": {
            "kind": "crm",
            "base_url": base_url,
            "account_id": "acc_1",
            "secret_env": "CRM_TOKEN",
            "webhook_token_env": "CRM_WEBHOOK_TOKEN",
        }
    }


async def test_a_non_ascii_signature_is_refused_401(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    async with running(config, port) as daemon:
        for path in ("/callbacks/churn/sync-status", "/callbacks/churn/brand"):
            body = orjson.dumps({"data": {"status": 200}, "signature": "é" * 128})
            assert (await daemon.post(path, body)).status_code == 401
            body = orjson.dumps({"data": {"status": 200}, "signature": "\U0001f600" * 128})
            assert (await daemon.post(path, body)).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"x": "\\ud800"}, "signature": "00"}',
        b'{"data": {"\\udfff": 1}, "signature": "00"}',
        b'{"data": {"x": ["a\\udbff"]}, "signature": "' + b"0" * 128 + b'"}',
        b'{"_id": "\\ud800", "status": "processed"}',
        b'{"_id": "j", "status": "processed", "contacts": [{"email": "\\ud800@x"}]}',
    ],
)
async def test_a_lone_surrogate_in_the_body_is_refused_400(
    tmp_path: Path, port: int, emulator: EmulatorServer, body: bytes
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, extra={"providers": crm_provider(emulator.base_url)}
    )
    async with running(config, port) as daemon:
        for path in (
            "/callbacks/churn/sync-status",
            "/callbacks/churn/brand",
            f"/webhooks/crm/{WEBHOOK_TOKEN}",
        ):
            answer = await daemon.post(path, body)
            assert answer.status_code == 400, (path, answer.text)
        # A surrogate pair written as two escapes is one character, and fine.
        fine = signed({"stopChurnBrandId": 7, "brandIdFromClient": "\U0001f600"})
        assert b"\\ud83d\\ude00" not in fine  # written as UTF-8...
        escaped = fine.replace("\U0001f600".encode(), b"\\ud83d\\ude00")  # ...as an escape pair
        assert (await daemon.post("/callbacks/churn/brand", escaped)).status_code == 200


@pytest.mark.parametrize("brand_id", [10**20, -(10**20), 2**63, -(2**63) - 1])
async def test_a_brand_id_outside_sqlite_integers_is_refused_400(
    tmp_path: Path, port: int, emulator: EmulatorServer, brand_id: int
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    async with running(config, port) as daemon:
        body = signed({"stopChurnBrandId": brand_id, "brandIdFromClient": "b1"})
        answer = await daemon.post("/callbacks/churn/brand", body)
        assert answer.status_code == 400
        assert await daemon.rows("SELECT COUNT(*) FROM brands") == [(0,)]
        largest = signed({"stopChurnBrandId": 2**63 - 1, "brandIdFromClient": "b1"})
        assert (await daemon.post("/callbacks/churn/brand", largest)).status_code == 200
        assert await daemon.rows("SELECT stop_churn_brand_id FROM brands") == [(2**63 - 1,)]


async def test_an_unexpected_error_is_a_500_logged_with_its_type_and_traceback(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    """A store changed under the daemon (the replay memory dropped by hand) is not a
    caller's fault: 500, and the log says what failed and where."""
    config = churn_config(tmp_path, emulator.base_url, port)
    async with running(config, port) as daemon:
        raw = sqlite3.connect(config.store_path)
        raw.execute("DROP TABLE callback_signatures")
        raw.commit()
        raw.close()
        with capture_logs() as logs:
            body = signed({"stopChurnBrandId": 7, "brandIdFromClient": "b1"})
            answer = await daemon.post("/callbacks/churn/brand", body)
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal error"}
        errors = [e for e in logs if e["event"] == "listener_error"]
        assert len(errors) == 1, logs
        assert errors[0]["log_level"] == "error"
        assert errors[0]["error"].startswith("OperationalError: no such table")
        assert errors[0]["route"] == "brand"
        assert isinstance(errors[0]["exc_info"], sqlite3.OperationalError)
        assert CALLBACK_SECRET not in repr(logs)


async def test_uvicorn_errors_are_logged_with_their_type_and_traceback() -> None:
    """uvicorn's own "Exception in ASGI application" record carries the exception."""
    import logging

    from dropsync.daemon.inbound.listener_server import route_uvicorn_logs

    route_uvicorn_logs()
    try:
        raise KeyError("boom")
    except KeyError as exc:
        caught = exc
    with capture_logs() as logs:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=caught)
    assert len(logs) == 1
    assert logs[0]["event"] == "listener_error"
    assert logs[0]["error"] == "KeyError: 'boom'"
    assert logs[0]["exc_info"][1] is caught
    assert logs[0]["log_level"] == "error"


async def test_a_flood_of_refusals_is_summarised_in_the_log(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    forged = orjson.dumps({"data": {"status": 200}, "signature": "0" * 128})
    with capture_logs() as logs:
        async with running(config, port) as daemon:
            for _ in range(40):
                answer = await daemon.post("/callbacks/churn/sync-status", forged)
                assert answer.status_code == 401
            assert (await daemon.post("/callbacks/churn/brand", b"[]")).status_code == 400
    refused = [e for e in logs if e["event"] == "callback_refused"]
    forged_lines = [e for e in refused if e["reason"] == "signature does not match"]
    # The first few one by one, then one line with the count (here: when the listener stops).
    assert [e.get("repeats") for e in forged_lines] == [None, None, None, 37]
    assert forged_lines[-1]["interval_s"] == 60.0
    assert sum(e.get("repeats", 1) for e in forged_lines) == 40
    # Another kind is logged on its own.
    assert [e["route"] for e in refused if e["status"] == 400] == ["brand"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeats_counts_per_interval_and_starts_afresh_after_a_quiet_one() -> None:
    clock = Clock()
    with capture_logs() as logs:
        repeats = Repeats(__import__("structlog").get_logger(), burst=2, clock=clock)
        for i in range(5):
            repeats.warning("refused", "a", reason="a", n=i)
        repeats.warning("refused", "b", reason="b")
        clock.now = 61.0  # the interval ended (no event loop here: no timer ran)
        repeats.warning("refused", "a", reason="a", n=5)
        clock.now = 200.0
        repeats.warning("refused", "a", reason="a", n=6)
        repeats.flush()
    assert [(e["reason"], e.get("n"), e.get("repeats")) for e in logs] == [
        ("a", 0, None),
        ("a", 1, None),
        ("b", None, None),
        ("a", 4, 3),  # the count, with the last one's fields
        ("a", 5, None),
        ("a", 6, None),
    ]
