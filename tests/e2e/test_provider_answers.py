"""The daemon subprocess against providers that answer badly: a Retry-After of any size,
a next attempt stored years ahead, secrets that cannot work, and providers that echo the
request's token back. Nothing makes the daemon exit; no secret leaves it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.favourites.emulator import FavouritesEmulator

from tests.e2e.crm_support import crm_config
from tests.support import DaemonProcess, drop_json, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

CRM_TOKEN = "crm-tok-3e1f0a9c77"
ALICE_TOKEN = "fav-alice-5b2d8e41"
BOB_TOKEN = "fav-bob-c09a7f66d2"
SECRETS = (CRM_TOKEN, ALICE_TOKEN, BOB_TOKEN)
DROPSYNC = str(Path(sys.executable).parent / "dropsync")
YEAR_9999_MS = 253_402_300_799_000
CEILING_MS = 3_600_000  # max_retry_after_s by default


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": CRM_TOKEN})) as server:
        yield server


@pytest.fixture
def favourites() -> Iterator[EmulatorServer]:
    emulator = FavouritesEmulator({ALICE_TOKEN: "alice", BOB_TOKEN: "bob"})
    emulator.seed("alice", [{"item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00Z"}])
    with EmulatorServer(emulator) as server:
        yield server


def config(tmp_path: Path, crm_url: str, crm_secret: str, extra: str = "") -> str:
    return crm_config(tmp_path, crm_url, crm_secret, backoff_cap_s=0.2, extra=extra)


def drop_contacts(tmp_path: Path, name: str, emails: list[str]) -> None:
    docs = [{"email": e, "updated_at": 1_700_000_000_000 + i} for i, e in enumerate(emails)]
    drop_json(tmp_path / "drop/contacts", name, docs)


def dropsync(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [DROPSYNC, *args, "--config", str(tmp_path / "dropsync.toml")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return done.stdout + done.stderr


def crm_state(tmp_path: Path) -> tuple[str, int | None, str | None]:
    rows = query(
        tmp_path / "store.db",
        "SELECT state, next_attempt_at, last_error FROM providers WHERE name = 'crm'",
    )
    return rows[0] if rows else ("", None, None)


def poke(db: Path, sql: str) -> None:
    """Write to the store as another program would."""
    raw = sqlite3.connect(db, timeout=30)
    try:
        with raw:
            raw.execute(sql)
    finally:
        raw.close()


def named(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    return [e for e in daemon.events() if e.get("event") == event]


# Item 5


def test_a_huge_retry_after_never_stops_the_daemon_and_is_capped(
    tmp_path: Path, crm: EmulatorServer
) -> None:
    crm.faults.update(status=429, retry_after="99999999999999999999")
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, 'secret_env = "T_CRM"'),
        env={"T_CRM": CRM_TOKEN},
    )
    try:
        daemon.start()
        drop_contacts(tmp_path, "a", ["ann@example.com"])
        capped = daemon.wait_for("retry_after_capped")
        assert capped["max_retry_after_s"] == 3600  # the default ceiling
        daemon.wait_for("provider_backing_off")
        state, next_attempt, _ = crm_state(tmp_path)
        assert state == "backing-off"
        assert next_attempt is not None and next_attempt <= time.time() * 1000 + CEILING_MS + 2
        # A restart finds the same state and stays up.
        assert daemon.stop() == 0
        daemon.start()
        assert crm_state(tmp_path)[1] == next_attempt
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert query(tmp_path / "store.db", "SELECT COUNT(*) FROM outbox") == [(1,)]


def test_a_next_attempt_stored_years_ahead_is_brought_back_at_start_and_on_reload(
    tmp_path: Path, crm: EmulatorServer
) -> None:
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, 'secret_env = "T_CRM"'),
        env={"T_CRM": CRM_TOKEN},
    )
    store = tmp_path / "store.db"
    try:
        daemon.start()
        wait_until(lambda: crm_state(tmp_path)[0], what="the provider's row")
        assert daemon.stop() == 0
        # What an older version stored after a Retry-After date in year 9999.
        poke(
            store,
            "UPDATE providers SET state = 'backing-off', "
            f"next_attempt_at = {YEAR_9999_MS} WHERE name = 'crm'",
        )
        daemon.start()
        daemon.wait_for("next_attempt_clamped", provider="crm")
        assert crm_state(tmp_path)[1] <= time.time() * 1000 + CEILING_MS  # type: ignore[operator]
        poke(store, f"UPDATE providers SET next_attempt_at = {YEAR_9999_MS} WHERE name = 'crm'")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")

        def clamped_twice() -> bool:
            if len(named(daemon, "next_attempt_clamped")) >= 2:
                return True
            assert daemon.process is not None and daemon.process.poll() is None
            return False

        try:
            wait_until(clamped_twice, timeout=90, what="the next attempt brought back on reload")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {daemon.log_path.read_text()[-4000:]}") from exc
        assert crm_state(tmp_path)[1] <= time.time() * 1000 + CEILING_MS  # type: ignore[operator]
        assert daemon.stop() == 0
    finally:
        daemon.close()


# Item 15


def test_a_reload_with_a_secret_that_cannot_work_is_refused_and_the_old_one_runs(
    tmp_path: Path, crm: EmulatorServer
) -> None:
    secret_file = tmp_path / "crm.secret"
    secret_file.write_text(CRM_TOKEN + "\n")
    daemon = DaemonProcess(
        tmp_path, config(tmp_path, crm.base_url, f'secret_file = "{secret_file}"')
    )
    try:
        daemon.start()
        drop_contacts(tmp_path, "a", ["ann@example.com"])
        wait_until(lambda: len(crm.emulator.contacts) == 1, what="first delivery")  # type: ignore[attr-defined]
        for round_, broken in enumerate(("missing", "line break"), start=1):
            if broken == "missing":
                secret_file.unlink()
            else:
                secret_file.write_text("crm-tok-first-half\ncrm-tok-second-half\n")
            daemon.send_signal(signal.SIGHUP)

            def refusals(expected: int = round_) -> list[dict[str, object]] | None:
                found = named(daemon, "config_reload_failed")
                return found if len(found) == expected else None

            refused = wait_until(refusals, what=f"reload {round_} refused")
            assert "providers.crm.secret_file" in str(refused[-1]["error"])
            assert "half" not in str(refused[-1]["error"])
        # The old secret keeps working: nothing paused, the next change goes out.
        drop_contacts(tmp_path, "b", ["bob@example.com"])
        wait_until(lambda: len(crm.emulator.contacts) == 2, what="delivery after refusals")  # type: ignore[attr-defined]
        assert crm_state(tmp_path)[0] == "online"
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert "half" not in daemon.log_path.read_text()


def test_last_error_is_cleared_once_a_pull_works_again(
    tmp_path: Path, crm: EmulatorServer, favourites: EmulatorServer
) -> None:
    tokens = tmp_path / "fav.secret"
    tokens.write_text(json.dumps({"alice": "fav-alice-WRONG"}))
    extra = f"""
[collections.favourites]
providers = ["fav"]
[providers.fav]
kind = "favourites"
base_url = "{favourites.base_url}"
secret_file = "{tokens}"
pull_interval_s = 0.2
"""
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, 'secret_env = "T_CRM"', extra),
        env={"T_CRM": CRM_TOKEN},
    )

    def fav() -> tuple[str, str | None]:
        rows = query(
            tmp_path / "store.db", "SELECT state, last_error FROM providers WHERE name = 'fav'"
        )
        return rows[0] if rows else ("", None)

    try:
        daemon.start()
        daemon.wait_for("lane_auth_failed", provider="fav", lane="alice", via="pull")
        assert fav()[0] == "auth-failed" and "401" in str(fav()[1])
        tokens.write_text(json.dumps({"alice": ALICE_TOKEN}))
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        # Nothing to push: only the pull can show that the provider works again.
        wait_until(lambda: fav() == ("online", None), what="fav online with no last_error")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert query(tmp_path / "store.db", "SELECT key FROM records") == [("alice:s1",)]


# Item 16


def test_a_token_with_a_line_break_is_a_config_error_everywhere(
    tmp_path: Path, crm: EmulatorServer
) -> None:
    env = {"T_CRM": "crm-tok-first-half\ncrm-tok-second-half"}
    daemon = DaemonProcess(
        tmp_path, config(tmp_path, crm.base_url, 'secret_env = "T_CRM"'), env=env
    )
    checked = subprocess.run(
        [DROPSYNC, "check-config", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        env=daemon.env,
        check=False,
    )
    assert checked.returncode == 2
    assert "providers.crm.secret_env" in checked.stderr
    assert "environment variable T_CRM" in checked.stderr
    assert "half" not in checked.stdout + checked.stderr
    # At start the same check refuses the config (exit 2: systemd does not restart it), as
    # it refuses any secret that cannot be read: not a daemon running with a paused provider.
    try:
        daemon.spawn()
        assert daemon.process is not None
        assert daemon.process.wait(timeout=60) == 2
        [fatal] = [e for e in daemon.events() if e.get("event") == "fatal_error"]
        assert "providers.crm.secret_env" in fatal["error"]
        assert "control character" in fatal["error"]
    finally:
        daemon.close()
    assert crm.emulator.requests("/account") == []  # never sent, so never retried forever
    assert "half" not in daemon.log_path.read_text()


ECHO = '{"error": "refused", "you sent": "{authorization}"}'


def test_an_echoed_token_reaches_no_log_store_status_or_dead_letter(
    tmp_path: Path, crm: EmulatorServer, favourites: EmulatorServer
) -> None:
    tokens = tmp_path / "fav.secret"
    tokens.write_text(json.dumps({"alice": ALICE_TOKEN, "bob": BOB_TOKEN}))
    extra = f"""
[collections.favourites]
providers = ["fav"]
[providers.fav]
kind = "favourites"
base_url = "{favourites.base_url}"
secret_file = "{tokens}"
pull_interval_s = 0.2
backoff_base_s = 0.05
backoff_cap_s = 0.2
"""
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, 'secret_env = "T_CRM"', extra),
        env={"T_CRM": CRM_TOKEN},
    )
    for server in (crm, favourites):
        server.faults.update(status=422, body=ECHO, content_type="application/json")
    store = tmp_path / "store.db"
    try:
        daemon.start()
        # 422: every record refused, each dead-lettered with the provider's (echoing) reason.
        drop_contacts(tmp_path, "a", ["ann@example.com", "al@example.com"])
        fav_folder = tmp_path / "drop/favourites"
        fav_folder.mkdir(parents=True)
        (fav_folder / "f.tmp").write_bytes(
            orjson.dumps(
                [
                    {"user": u, "item": "s2", "action": "ADD", "actionDate": "2024-02-01T00:00:00Z"}
                    for u in ("alice", "bob")
                ]
            )
        )
        (fav_folder / "f.tmp").rename(fav_folder / "f.json")
        wait_until(
            lambda: query(store, "SELECT COUNT(*) FROM dead_letters") == [(4,)],
            what="four dead letters",
        )
        # 500 and 401 echoing the token: last_error, deliveries.error, the logs.
        for status, event in ((500, "provider_backing_off"), (401, "provider_auth_failed")):
            crm.faults.update(status=status, body=ECHO)
            drop_contacts(tmp_path, f"s{status}", [f"c{status}@example.com"])
            daemon.wait_for(event, provider="crm")
        daemon.wait_for("pull_failed", provider="fav")  # the list answered 422 too
        status_json = dropsync(tmp_path, "status", "--json")
        status_text = dropsync(tmp_path, "status")
        letters = dropsync(tmp_path, "dead-letters", "list") + dropsync(
            tmp_path, "dead-letters", "list", "--json"
        )
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert "[redacted]" in letters and "[redacted]" in status_json
    texts = {
        "log": daemon.log_path.read_text(),
        "status --json": status_json,
        "status": status_text,
        "dead-letters list": letters,
    }
    stored = b"".join(p.read_bytes() for p in (store, Path(f"{store}-wal")) if p.exists()).decode(
        "utf-8", "replace"
    )
    texts["store"] = stored
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}"


# Issue 19 item 13: `resync NAME` is "try now"; every wait of the provider ends, in the store and
# in the running daemon, and `status` shows every wait while it lasts.

A_DAY_S = 86_400


def status_row(tmp_path: Path, name: str) -> dict[str, object]:
    done = subprocess.run(
        [DROPSYNC, "status", "--json", "--config", str(tmp_path / "dropsync.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    [row] = [r for r in json.loads(done.stdout)["providers"] if r["provider"] == name]
    return dict(row)


def resync(tmp_path: Path, name: str) -> None:
    done = subprocess.run(
        [DROPSYNC, "resync", name, "--config", str(tmp_path / "dropsync.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def shows_a_wait_of_an_hour(row: dict[str, object]) -> bool:
    next_attempt = row["next_attempt_at"]
    return (
        row["state"] == "backing-off"
        and isinstance(next_attempt, int)
        and next_attempt > time.time() * 1000 + 3_000_000
    )


@pytest.mark.parametrize("reload", [False, True], ids=["resync", "resync-then-sighup"])
def test_resync_ends_a_push_retry_after_wait_in_the_running_daemon(
    tmp_path: Path, crm: EmulatorServer, reload: bool
) -> None:
    crm.faults.update(status=429, count=1, retry_after="3600")
    settings = f'secret_env = "T_CRM"\nmax_retry_after_s = {A_DAY_S}'
    daemon = DaemonProcess(
        tmp_path, config(tmp_path, crm.base_url, settings), env={"T_CRM": CRM_TOKEN}
    )
    try:
        daemon.start()
        drop_contacts(tmp_path, "a", ["ann@example.com"])
        daemon.wait_for("provider_backing_off", provider="crm")
        wait_until(
            lambda: shows_a_wait_of_an_hour(status_row(tmp_path, "crm")),
            what="status showing the hour's wait",
        )
        resync(tmp_path, "crm")
        if reload:
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("config_reloaded")
        wait_until(
            lambda: [a.status for a in crm.emulator.requests("/account")] == [429, 201],
            what="the contact sent again after the resync",
        )
        wait_until(lambda: status_row(tmp_path, "crm")["pending"] == 0, what="nothing pending")
        row = status_row(tmp_path, "crm")
        assert (row["state"], row["next_attempt_at"]) == ("online", None)
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_resync_ends_a_pull_retry_after_wait_and_status_shows_it(
    tmp_path: Path, crm: EmulatorServer, favourites: EmulatorServer
) -> None:
    tokens = tmp_path / "fav.secret"
    tokens.write_text(json.dumps({"alice": ALICE_TOKEN}))
    extra = f"""
[collections.favourites]
providers = ["fav"]
[providers.fav]
kind = "favourites"
base_url = "{favourites.base_url}"
secret_file = "{tokens}"
pull_interval_s = 0.2
max_retry_after_s = {A_DAY_S}
"""
    daemon = DaemonProcess(
        tmp_path,
        config(tmp_path, crm.base_url, 'secret_env = "T_CRM"', extra),
        env={"T_CRM": CRM_TOKEN},
    )

    def gets() -> list[int]:
        return [a.status for a in favourites.emulator.requests("/getUserFavorites")]

    try:
        daemon.start()
        wait_until(gets, what="the first pull")
        favourites.faults.update(status=429, count=1, retry_after="3600")
        daemon.wait_for("pull_failed", provider="fav")
        wait_until(
            lambda: shows_a_wait_of_an_hour(status_row(tmp_path, "fav")),
            what="status showing the pull's hour",
        )
        throttled = len(gets())
        resync(tmp_path, "fav")
        wait_until(lambda: len(gets()) > throttled, what="a pull after the resync")
        assert gets()[throttled - 1 :] == [429, 200]
        wait_until(
            lambda: status_row(tmp_path, "fav")["next_attempt_at"] is None,
            what="no wait shown",
        )
        assert status_row(tmp_path, "fav")["state"] == "online"
        assert daemon.stop() == 0
    finally:
        daemon.close()
