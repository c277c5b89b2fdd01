"""2-way registration with the daemon as a real process: confirmed, refused, pending while
the provider is down, a SIGKILL between asking and recording, and the password kept out of
every log line, the store, its write-ahead log and ``status``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.registrations.emulator import RegistrationsEmulator

from tests.support import DaemonProcess, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

PASSWORD = "Lenos-pa55word-9f3e"


@pytest.fixture
def lenos() -> Iterator[EmulatorServer]:
    emulator = RegistrationsEmulator(password=PASSWORD)
    emulator.seed(participants=3, sessions=2)
    emulator.put("sessions", [{"id": "full", "startTime": "2026-06-01T09:00:00Z", "capacity": 0}])
    with EmulatorServer(emulator) as server:
        yield server


def emulator_of(server: EmulatorServer) -> RegistrationsEmulator:
    assert isinstance(server.emulator, RegistrationsEmulator)
    return server.emulator


def daemon_for(
    tmp_path: Path, server: EmulatorServer, pull_interval_s: float = 3600
) -> DaemonProcess:
    config = f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
[providers.lenos]
kind = "registrations"
base_url = "{server.base_url}"
username = "fp-bot"
event_id = "ev-2026"
secret_env = "LENOS_PASSWORD"
pull_interval_s = {pull_interval_s}
backoff_base_s = 0.05
backoff_cap_s = 0.3
"""
    return DaemonProcess(tmp_path, config, env={"LENOS_PASSWORD": PASSWORD})


def ask(tmp_path: Path, key: str, participant: str, session: str, action: str = "register") -> None:
    """What an app does when a person taps "Register": one INSERT, no time given."""
    db = sqlite3.connect(tmp_path / "store.db", timeout=10)
    with db:
        db.execute(
            "INSERT INTO inbox (collection, key, op, body) VALUES ('registration_requests', ?, "
            "'upsert', json_object('participantId', ?, 'sessionId', ?, 'action', ?))",
            (key, participant, session, action),
        )
    db.close()


def outcome(tmp_path: Path, key: str) -> tuple[str, str | None, str | None] | None:
    rows = query(
        tmp_path / "store.db",
        "SELECT status, reason, registration_id FROM registration_requests WHERE key = ?",
        (key,),
    )
    return rows[0] if rows else None


def decided(tmp_path: Path, key: str) -> tuple[str, str | None, str | None]:
    def done() -> tuple[str, str | None, str | None] | None:
        found = outcome(tmp_path, key)
        return found if found is not None and found[0] != "pending" else None

    result: tuple[str, str | None, str | None] = wait_until(done, what=f"outcome of {key}")
    return result


def test_confirmed_refused_and_pending_while_the_provider_is_down(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    daemon = daemon_for(tmp_path, lenos)
    try:
        daemon.start()
        daemon.wait_for("pulled", stream="participants")
        ask(tmp_path, "q1", "p1", "s1")
        ask(tmp_path, "q2", "p2", "full")
        status, reason, registration = decided(tmp_path, "q1")
        assert (status, reason) == ("confirmed", None) and registration
        # The registration is in `registrations` at once (the only pull was at start).
        assert query(
            tmp_path / "store.db",
            "SELECT json_extract(body, '$.status'), origin FROM records "
            "WHERE collection = 'registrations' AND key = ?",
            (registration,),
        ) == [("Registered", "lenos")]
        assert decided(tmp_path, "q2") == ("refused", "session is full", None)

        lenos.stop()
        ask(tmp_path, "q3", "p2", "s1")
        daemon.wait_for("provider_offline")
        assert outcome(tmp_path, "q3") == ("pending", None, None)
        lenos.start()
        assert decided(tmp_path, "q3")[0] == "confirmed"
        assert len(emulator.registered("p2", "s1")) == 1

        # A refused request is not asked again by itself.
        asked = len(emulator.requests("/api/v1/events/ev-2026/registrations"))
        ask(tmp_path, "q4", "p1", "s1", "cancel")
        assert decided(tmp_path, "q4")[0] == "confirmed"
        assert emulator.registered("p1", "s1") == []
        assert query(
            tmp_path / "store.db",
            "SELECT json_extract(body, '$.status') FROM records "
            "WHERE collection = 'registrations' AND key = ?",
            (registration,),
        ) == [("Cancelled",)]
        assert len(emulator.requests("/api/v1/events/ev-2026/registrations")) == asked + 1
        assert outcome(tmp_path, "q2") == ("refused", "session is full", None)
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_sigkill_between_asking_and_recording_does_not_register_twice(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    daemon = daemon_for(tmp_path, lenos)
    try:
        daemon.start()
        emulator.stall_ms = 120_000  # the provider registers, then holds its answer
        ask(tmp_path, "q1", "p3", "s2")
        wait_until(lambda: emulator.registered("p3", "s2"), what="the provider to register")
        daemon.kill()
        emulator.stall_ms = 0
        assert outcome(tmp_path, "q1") == ("pending", None, None)

        daemon.start()
        status, _, registration = decided(tmp_path, "q1")
        assert status == "confirmed"
        assert len(emulator.registered("p3", "s2")) == 1
        assert emulator.applied["p3:s2@register"] == 1
        posts = [
            a
            for a in emulator.requests("/api/v1/events/ev-2026/registrations")
            if a.method == "POST"
        ]
        assert len(posts) == 2 and posts[0].idempotency_key == posts[1].idempotency_key
        assert registration == emulator.registered("p3", "s2")[0]["id"]
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_the_password_and_tokens_never_leave_the_adapter(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    # A provider that echoes what it was sent in its error answers.
    emulator.queue_raw(500, b"login failed for {body}", route="POST /login")
    daemon = daemon_for(tmp_path, lenos, pull_interval_s=0.3)
    try:
        daemon.start()
        daemon.wait_for("pull_failed")
        daemon.wait_for("pulled", stream="participants")
        emulator.queue_raw(
            409, b'{"reason": "refused: {authorization} {body}"}', route="POST /registrations"
        )
        ask(tmp_path, "q1", "p1", "s1")
        status, reason, _ = decided(tmp_path, "q1")
        assert status == "refused" and reason is not None and "[redacted]" in reason

        emulator.queue_raw(401, b"who is {authorization}?", route="GET /participants")
        emulator.queue_raw(401, b"no: {body}", route="POST /login")
        with emulator.lock:
            emulator.tokens.clear()
        daemon.wait_for("pull_auth_failed")
        report = subprocess.run(
            [
                sys.executable,
                "-m",
                "dropsync.daemon.cli",
                "status",
                "--json",
                "--config",
                str(daemon.config_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "auth-failed" in report and "[redacted]" in report
        wal = (tmp_path / "store.db-wal").read_bytes()
        assert daemon.stop() == 0
    finally:
        daemon.close()
    secrets = [PASSWORD, *emulator.issued]
    assert len(secrets) >= 2
    texts = {
        "log": daemon.log_path.read_bytes(),
        "store": (tmp_path / "store.db").read_bytes(),
        "wal before stop": wal,
        "status": report.encode(),
    }
    for name, text in texts.items():
        for secret in secrets:
            assert secret.encode() not in text, f"a secret in the {name}"


@pytest.mark.parametrize(
    ("drop", "key"),
    [
        ("username", "providers.lenos.username"),
        ("event_id", "providers.lenos.event_id"),
        ("secret_env", "providers.lenos.secret_env"),
    ],
)
def test_check_config_names_a_missing_credential(tmp_path: Path, drop: str, key: str) -> None:
    lines = {
        "kind": '"registrations"',
        "base_url": '"http://127.0.0.1:9"',
        "username": '"fp-bot"',
        "event_id": '"ev-2026"',
        "secret_env": '"LENOS_PASSWORD"',
    }
    body = "\n".join(f"{k} = {v}" for k, v in lines.items() if k != drop)
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n[providers.lenos]\n{body}\n')
    done = subprocess.run(
        [sys.executable, "-m", "dropsync.daemon.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={"LENOS_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert key in done.stderr and PASSWORD not in done.stderr + done.stdout


def test_a_store_locked_by_another_program_pauses_pulls_without_exiting(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    daemon = daemon_for(tmp_path, lenos, pull_interval_s=0.2)
    try:
        daemon.start()
        daemon.wait_for("pulled", stream="participants")
        holder = sqlite3.connect(tmp_path / "store.db", timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        emulator.put("participants", [{"id": "p2", "RegistrationStatus": "Cancelled"}])
        # The daemon's store waits out the lock (docs/schema.md, "How the daemon writes").
        daemon.wait_for("work_paused", condition="store busy")
        holder.execute("ROLLBACK")
        holder.close()
        wait_until(
            lambda: (
                query(
                    tmp_path / "store.db",
                    "SELECT json_extract(body, '$.fp_status') FROM records "
                    "WHERE collection = 'participants' AND key = 'p2'",
                )
                == [("cancelled",)]
            ),
            what="the change pulled once the lock is gone",
        )
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_sigkill_mid_pull_keeps_the_cursor_and_the_next_run_completes(
    tmp_path: Path, lenos: EmulatorServer
) -> None:
    emulator = emulator_of(lenos)
    emulator.seed(participants=3000)
    emulator.faults.update(latency_ms=500)  # six slow pages: time to kill between them
    daemon = daemon_for(tmp_path, lenos, pull_interval_s=0.2)
    store = tmp_path / "store.db"

    def participants() -> int:
        return int(
            query(store, "SELECT COUNT(*) FROM records WHERE collection = 'participants'")[0][0]
        )

    def cursor() -> list[tuple[str]]:
        return query(
            store, "SELECT value FROM cursors WHERE provider = 'lenos' AND name = 'participants'"
        )

    try:
        daemon.start()
        wait_until(lambda: participants() > 0, what="a first page committed")
        daemon.kill()
        assert 0 < participants() < 3000 and cursor() == []  # cut mid-pages: no cursor
        emulator.faults.clear()
        daemon.start()
        wait_until(cursor, what="the pull settled")
        assert participants() == 3000
        assert daemon.stop() == 0
    finally:
        daemon.close()
