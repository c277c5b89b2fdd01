"""The churn kind's file path meets the same answers as the other kinds: a Retry-After of
any size is honoured up to the ceiling, and an echoed token never reaches the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.churn import tables
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.churn_support import (
    CALLBACK_SECRET,
    TOKEN,
    churn_config,
    document,
    eventually,
    merge,
    running,
)
from tests.support import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(ChurnEmulator(TOKEN, CALLBACK_SECRET, callback_base=None)) as server:
        yield server


@pytest.mark.parametrize(
    ("status", "retry_after", "body"),
    [
        (429, "99999999999999999999", None),
        (503, "Fri, 31 Dec 9999 23:59:59 GMT", None),
        (500, None, '{"error": "you sent {authorization}"}'),
    ],
)
async def test_an_upload_failure_is_bounded_and_secret_free(
    tmp_path: Path, emulator: EmulatorServer, status: int, retry_after: str | None, body: str | None
) -> None:
    port = free_port()
    config = churn_config(tmp_path, emulator.base_url, port)
    emulator.faults.update(status=status, retry_after=retry_after, body=body)
    async with running(config, port) as daemon:
        await daemon.store.transact(lambda db: tables.save_brand(db, "churn", "acme", 15, now=1))
        await merge(daemon.store, config, [document("users", i, "acme") for i in range(3)])
        daemon.supervisor.wake(["churn"])
        [(state, next_attempt, error)] = await eventually(
            lambda: daemon.rows(
                "SELECT state, next_attempt_at, last_error FROM providers "
                "WHERE name = 'churn' AND state <> 'online'"
            ),
            "the upload failed",
        )
    assert state == "backing-off" and TOKEN not in error
    assert next_attempt <= time.time() * 1000 + 3_600_002  # max_retry_after_s by default
    if body is not None:
        assert "[redacted]" in error
