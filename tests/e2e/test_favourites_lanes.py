"""The daemon subprocess with one lane per favourites user (issue 21, part 1, acceptance):
carol's token refused, alice and bob are pulled and pushed on; status names carol; her
corrected token, written to the tokens file by an atomic rename (no reload), sends her pending
item; no token reaches a log, the store or status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.favourites.emulator import FavouritesEmulator

from tests.support import DaemonProcess, drop_json, query, wait_until

pytestmark = pytest.mark.e2e

ALICE, BOB = "fav-alice-7c1e55d0", "fav-bob-0a9f3b21"
CAROL_OLD, CAROL_NEW = "fav-carol-expired-4d6e", "fav-carol-fresh-91b2"
DAVE = "fav-dave-2f8a6c13"
TOKENS = (ALICE, BOB, CAROL_OLD, CAROL_NEW, DAVE)
DROPSYNC = str(Path(sys.executable).parent / "dropsync")


@pytest.fixture
def favourites() -> Iterator[EmulatorServer]:
    emulator = FavouritesEmulator({ALICE: "alice", BOB: "bob", CAROL_NEW: "carol", DAVE: "dave"})
    emulator.echo_refusals = True  # a refusal quotes the token it was sent
    with EmulatorServer(emulator) as server:
        yield server


def emulator_of(server: EmulatorServer) -> FavouritesEmulator:
    assert isinstance(server.emulator, FavouritesEmulator)
    return server.emulator


def write_config(tmp_path: Path, base_url: str, tokens: str) -> str:
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
[collections.favourites]
providers = ["fav"]
[providers.fav]
kind = "favourites"
base_url = "{base_url}"
{tokens}
pull_interval_s = 0.3
backoff_base_s = 0.05
backoff_cap_s = 0.2
"""


def replace(path: Path, text: str) -> None:
    """What the app that signs users in does: write beside, rename into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def dropsync(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DROPSYNC, *args, "--config", str(tmp_path / "dropsync.toml")],
        capture_output=True,
        text=True,
        check=False,
    )


def favourite(user: str, item: str, day: int) -> dict[str, str]:
    return {
        "user": user,
        "item": item,
        "action": "ADD",
        "actionDate": f"2024-03-{day:02d}T10:00:00Z",
    }


def test_carols_refused_token_pauses_only_carol_and_her_new_token_sends_her_item(
    tmp_path: Path, favourites: EmulatorServer
) -> None:
    emulator = emulator_of(favourites)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"alice": ALICE, "bob": BOB, "carol": CAROL_OLD}))
    daemon = DaemonProcess(
        tmp_path, write_config(tmp_path, favourites.base_url, f'secret_file = "{tokens}"')
    )
    store = tmp_path / "store.db"
    drop = tmp_path / "drop/favourites"
    try:
        daemon.start()
        drop_json(drop, "first", [favourite("carol", "c1", 1), favourite("alice", "a0", 1)])
        daemon.wait_for("lane_auth_failed", provider="fav", lane="carol")
        # While carol is refused, alice and bob go on: three rounds, each a local favourite
        # pushed and a remote one pulled, for both of them.
        for round_ in range(1, 4):
            for user in ("alice", "bob"):
                emulator.seed(user, [favourite(user, f"remote{round_}", 10 + round_)])
            drop_json(
                drop,
                f"round{round_}",
                [favourite(u, f"local{round_}", 10 + round_) for u in ("alice", "bob")],
            )

            def pushed_and_pulled(round_: int = round_) -> bool:
                keys = {k for (k,) in query(store, "SELECT key FROM records")}
                return all(
                    f"local{round_}" in emulator.items.get(u, {}) and f"{u}:remote{round_}" in keys
                    for u in ("alice", "bob")
                )

            wait_until(pushed_and_pulled, what=f"round {round_} of alice and bob")
        for user in ("alice", "bob"):
            assert emulator.calls_of(user, "POST") >= 3 and emulator.calls_of(user, "GET") >= 3
        # carol was asked at most once per flow (a pull and a push may both be under way
        # when the first refusal is read), then waited: her item is set aside, she is not
        # pulled any more.
        assert emulator.calls_of(None, "GET", 401) <= 1
        assert emulator.calls_of(None, "POST", 401) <= 1
        assert query(store, "SELECT key, held_lane FROM outbox") == [("carol:c1", "carol")]
        assert query(store, "SELECT state FROM providers WHERE name = 'fav'") == [("online",)]

        text = dropsync(tmp_path, "status")
        as_json = dropsync(tmp_path, "status", "--json")
        check = dropsync(tmp_path, "status", "--check")
        assert "paused user carol (auth-failed since" in text.stdout
        (fav,) = [p for p in json.loads(as_json.stdout)["providers"] if p["provider"] == "fav"]
        assert [(u["user"], u["state"], u["pending"]) for u in fav["paused_users"]] == [
            ("carol", "auth-failed", 1)
        ]
        assert check.returncode == 1
        assert "WARNING: provider fav: 1 user(s) paused" in check.stdout
        assert "carol (auth-failed" in check.stdout

        # carol signs in again: the app renames her new token into place; no reload.
        replace(tokens, json.dumps({"alice": ALICE, "bob": BOB, "carol": CAROL_NEW}))
        wait_until(lambda: "c1" in emulator.items.get("carol", {}), what="carol's item sent")
        wait_until(
            lambda: query(store, "SELECT COUNT(*) FROM outbox") == [(0,)], what="nothing pending"
        )
        assert query(store, "SELECT state FROM provider_users WHERE user = 'carol'") == [
            ("active",)
        ]
        assert not [e for e in daemon.events() if e.get("event") == "config_reloaded"]
        status_after = (
            dropsync(tmp_path, "status").stdout + dropsync(tmp_path, "status", "--json").stdout
        )
        assert "paused user" not in status_after
        assert daemon.stop() == 0
    finally:
        daemon.close()
    logged = daemon.log_path.read_text()
    assert "[redacted]" in logged  # the refusal echoed carol's token; the log masks it
    stored = b"".join(p.read_bytes() for p in (store, Path(f"{store}-wal")) if p.exists()).decode(
        "utf-8", "replace"
    )
    outputs = {
        "log": logged,
        "store": stored,
        "status": text.stdout + text.stderr,
        "status --json": as_json.stdout,
        "status --check": check.stdout,
        "status after": status_after,
    }
    for where, output in outputs.items():
        for token in TOKENS:
            assert token not in output, f"a token in {where}"


def test_tokens_dir_a_user_who_signs_in_late_and_files_that_are_no_users(
    tmp_path: Path, favourites: EmulatorServer
) -> None:
    emulator = emulator_of(favourites)
    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "alice").write_text(ALICE + "\n")
    daemon = DaemonProcess(
        tmp_path, write_config(tmp_path, favourites.base_url, f'tokens_dir = "{folder}"')
    )
    store = tmp_path / "store.db"
    drop = tmp_path / "drop/favourites"
    try:
        daemon.start()
        drop_json(drop, "first", [favourite("dave", "d1", 1), favourite("alice", "a1", 1)])
        wait_until(lambda: "a1" in emulator.items.get("alice", {}), what="alice's item")
        wait_until(
            lambda: query(store, "SELECT key, held_lane FROM outbox") == [("dave:d1", "dave")],
            what="dave's item set aside",
        )
        assert query(store, "SELECT state, pending FROM provider_users WHERE user = 'dave'") == [
            ("no-token", 1)
        ]
        # Files that are no user's token: a temporary file, a name that is not UTF-8, an
        # empty file. The daemon goes on, and says what it cannot use.
        (folder / ".dave.tmp").write_text(DAVE)
        with open(os.path.join(os.fsencode(folder), b"bad\xffname"), "wb") as handle:
            handle.write(b"tok-of-nobody-1234")
        (folder / "erin").write_text("")
        daemon.wait_for("credentials_unreadable", provider="fav", file=str(folder / "erin"))
        assert "dave" not in {
            u for (u,) in query(store, "SELECT user FROM provider_users WHERE state = 'active'")
        }
        # dave signs in: his item goes at once.
        os.replace(folder / ".dave.tmp", folder / "dave")
        wait_until(lambda: "d1" in emulator.items.get("dave", {}), what="dave's item sent")
        emulator.seed("dave", [favourite("dave", "remote", 5)])
        wait_until(
            lambda: query(store, "SELECT key FROM records WHERE key = 'dave:remote'"),
            what="dave pulled",
        )
        assert daemon.stop() == 0
    finally:
        daemon.close()
    logged = daemon.log_path.read_text()
    for token in (ALICE, DAVE, "tok-of-nobody-1234"):
        assert token not in logged
