"""``GET /readyz`` on the running daemon's listener: 200 only while the daemon can work, 503
with the reasons while another program holds the store's write lock, while work is paused
or the drop folder is gone; ``/healthz`` (liveness) stays 200 through all of it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support import DaemonProcess, StoreLockHolder, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e

BUSY = "store busy: another program holds the store's write lock"


def get(url: str) -> tuple[int, Any]:
    answer = httpx.get(url, timeout=10)
    return answer.status_code, answer.json()


def at_once(url: str, count: int) -> list[int]:
    """The status codes of ``count`` GETs of ``url`` sent together."""

    async def send() -> list[int]:
        codes: list[int] = []
        async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
            for _ in range(count):

                async def one() -> None:
                    codes.append((await client.get(url)).status_code)

                tg.start_soon(one)
        return codes

    return anyio.run(send)


def test_readyz_is_503_with_the_reason_while_a_lock_is_held_and_200_again_after(
    tmp_path: Path,
) -> None:
    port = free_port()
    store, drop = tmp_path / "store.db", tmp_path / "drop"
    daemon = DaemonProcess(
        tmp_path,
        f'[store]\npath = "{store}"\n[drop]\npath = "{drop}"\nsettle_ms = 20\n'
        f'[listener]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        '[collections.contacts]\nkey = "email"\ntimestamp = "updated_at"\n',
    )
    url = f"http://127.0.0.1:{port}"
    holder = None
    try:
        daemon.start()
        daemon.wait_for("listener_started")
        assert get(f"{url}/readyz") == (200, {"status": "ready"})

        # Another program takes the write lock while the daemon has nothing to write: not
        # ready at once (the probe finds it), alive all the same.
        holder = StoreLockHolder(store)
        status, body = wait_until(lambda: (found := get(f"{url}/readyz"))[0] == 503 and found)
        # (Were the daemon's own writer at work just then, it pauses within its busy timeout,
        # and that pause is the reason.)
        assert body["status"] == "not ready"
        assert body["reasons"] == [BUSY] or body["reasons"][0].startswith("store busy: ")
        assert get(f"{url}/healthz")[0] == 200
        # Requests at the same moment share one check: none of them is told "ready".
        assert set(at_once(f"{url}/readyz", 12)) == {503}
        # Work arrives and pauses on the lock: the pause is the reason (without the probe's
        # second saying of it, and without paths).
        drop_json(drop / "contacts", "a", [{"email": "a@x", "updated_at": 1_700_000_000_000}])
        paused = daemon.wait_for("work_paused", condition="store busy")
        status, body = get(f"{url}/readyz")
        assert status == 503 and body["reasons"] == [f"store busy: {paused['work']} paused"]
        assert str(tmp_path) not in str(body)
        holder.release()
        wait_until(lambda: get(f"{url}/readyz")[0] == 200, what="ready again")
        wait_until(lambda: query(store, "SELECT 1 FROM records"), what="the file applied")

        # The drop folder gone: the watcher pauses, the daemon is not ready until it is back.
        shutil.rmtree(drop)
        daemon.wait_for("work_paused", condition="drop folder missing")
        assert get(f"{url}/readyz") == (
            503,
            {"status": "not ready", "reasons": ["drop folder missing: watcher paused"]},
        )
        drop.mkdir()
        wait_until(lambda: get(f"{url}/readyz")[0] == 200, what="ready with the folder back")
        assert daemon.stop() == 0
    finally:
        if holder is not None:
            holder.close()
        daemon.close()
