"""The daemon as a real subprocess with the churn provider and its listener: a callback
replayed after a restart is refused; healthz and metrics come from the running daemon."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from prometheus_client.parser import text_string_to_metric_families

from tests.churn_support import CALLBACK_SECRET, TOKEN, churn_daemon, listener_emulator
from tests.support import drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these


def test_replay_after_restart_is_refused_and_healthz_metrics_answer(tmp_path: Path) -> None:
    port = free_port()
    churn = listener_emulator(port)
    with EmulatorServer(churn) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            docs = [
                {
                    "data": {"id": i, "email": f"u{i}@x"},
                    "createdAt": 1_700_000_000_000,
                    "updatedAt": 1_700_000_000_000 + i,
                }
                for i in range(4)
            ]
            drop_json(tmp_path / "drop/users", "a", docs)
            daemon.wait_for("batch_delivered", provider="churn")
            assert sorted(churn.applied.values()) == [1, 1, 1, 1]
            url = f"http://127.0.0.1:{port}"
            health = httpx.get(url + "/healthz", timeout=10)
            assert health.status_code == 200 and health.json()["providers"] == {"churn": "online"}
            metrics = httpx.get(url + "/metrics", timeout=10)
            names = {f.name for f in text_string_to_metric_families(metrics.text)}
            assert {"dropsync_pending", "dropsync_deliveries", "dropsync_files"} <= names

            control = f"{server.base_url}/_emulator/send"
            assert httpx.post(control, json={"kind": "sync-status"}).json() == {"status": 200}
            state_sql = "SELECT state FROM deliveries"
            assert query(tmp_path / "store.db", state_sql) == [("confirmed",)]
            assert daemon.stop() == 0

            daemon.start()
            wait_until(lambda: _answers(url), what="the listener after the restart")
            replay = httpx.post(control, json={"kind": "sync-status", "replay": True})
            assert replay.json() == {"status": 401}
            daemon.wait_for("callback_refused", reason="signature already accepted (replay)")
            assert query(tmp_path / "store.db", state_sql) == [("confirmed",)]
            assert daemon.stop() == 0
        finally:
            daemon.close()
    log = daemon.log_path.read_text()
    assert TOKEN not in log and CALLBACK_SECRET not in log
    for secret in (TOKEN, CALLBACK_SECRET):
        assert not query(
            tmp_path / "store.db",
            "SELECT 1 FROM deliveries WHERE instr(COALESCE(error, ''), ?) > 0",
            (secret,),
        )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
