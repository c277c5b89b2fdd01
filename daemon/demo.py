"""``dropsync demo`` and ``dropsync emulate``: the daemon on built-in emulated providers.

The emulators are real HTTP servers on 127.0.0.1 (``adapters.emulators``). The demo
writes a sample drop folder, starts the CRM and favourites emulators on free ports,
and runs the daemon against them with demo credentials passed in environment
variables (never in a file).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import anyio
import orjson
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.crm import CrmEmulator
from dropsync.adapters.emulators.favourites import FavouritesEmulator
from dropsync.adapters.emulators.registrations import RegistrationsEmulator
from dropsync.daemon.config import parse_config
from dropsync.daemon.logs import configure_logging
from dropsync.daemon.runner import Daemon

DEMO_ACCOUNT = "acc_1"
DEMO_CRM_TOKEN = "demo-crm-token"
DEMO_FAVOURITE_TOKENS = {"alice": "demo-token-alice", "bob": "demo-token-bob"}
DEMO_REGISTRATIONS = {"username": "fp-bot", "password": "demo-lenos-password", "event": "ev-2026"}


def emulators(
    crm_port: int = 0, favourites_port: int = 0, host: str = "127.0.0.1"
) -> tuple[EmulatorServer, EmulatorServer]:
    """The CRM and favourites emulators with the demo credentials (not started)."""
    crm = EmulatorServer(CrmEmulator({DEMO_ACCOUNT: DEMO_CRM_TOKEN}), crm_port, host)
    favourites = FavouritesEmulator({v: k for k, v in DEMO_FAVOURITE_TOKENS.items()})
    favourites.seed(
        "alice",
        [{"item": "session_21982", "action": "ADD", "actionDate": "2024-05-02T10:45:12.798Z"}],
    )
    return crm, EmulatorServer(favourites, favourites_port, host)


def registrations_emulator(port: int = 0, host: str = "127.0.0.1") -> EmulatorServer:
    """The event-registration emulator with the demo credentials and a small event."""
    emulator = RegistrationsEmulator(
        username=DEMO_REGISTRATIONS["username"],
        password=DEMO_REGISTRATIONS["password"],
        event_id=DEMO_REGISTRATIONS["event"],
    )
    emulator.seed(participants=20, sessions=6)
    emulator.put(
        "sessions",
        [
            {
                "id": "s1",
                "title": "Keynote A",
                "startTime": "2026-06-01T09:00:00Z",
                "in_slot": True,
                "capacity": 2,
            },
            {
                "id": "s2",
                "title": "Keynote B",
                "startTime": "2026-06-01T09:00:00Z",
                "in_slot": True,
                "capacity": 50,
            },
        ],
    )
    emulator.put("locations", [{"id": "l1", "name": "Hall 1"}])
    emulator.put("sessionTags", [{"id": "t1", "name": "Keynote"}])
    return EmulatorServer(emulator, port, host)


def sample_files(drop: Path) -> None:
    """Write the sample drop folder (only files not there yet)."""
    samples = {
        "contacts/guests.json": [
            {
                "email": "ann@example.com",
                "name_first": "Ann",
                "name_last": "Lee",
                "updated_at": "2024-05-02T10:45:12.798Z",
            },
            {
                "email": "bob@example.com",
                "name_first": "Bob",
                "name_last": "Ray",
                "updated_at": "2024-05-03T08:00:00Z",
                "purchase": {
                    "transaction_code": "T-1001",
                    "price": 340,
                    "currency": "USD",
                    "product_uuid": "room-deluxe",
                    "status": "check_in",
                },
            },
        ],
        "favourites/app.json": [
            {
                "user": "bob",
                "item": "session_114582",
                "action": "ADD",
                "actionDate": "2024-05-03T12:15:00.128Z",
            },
        ],
        "users/users.json": [
            {
                "data": {"id": 123, "email": "john@doe.com", "city": "Limassol"},
                "createdAt": 1696814606000,
                "updatedAt": 1696821819000,
            },
        ],
    }
    for name, documents in samples.items():
        path = drop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(orjson.dumps(documents, option=orjson.OPT_INDENT_2))


def run_demo(directory: Path, *, exit_when_synced: bool) -> int:
    """Run the daemon on sample files in ``directory`` against the emulators."""
    directory = directory.resolve()
    crm, favourites = emulators()
    with crm, favourites:
        os.environ["DROPSYNC_DEMO_CRM_TOKEN"] = DEMO_CRM_TOKEN
        os.environ["DROPSYNC_DEMO_FAVOURITES_TOKENS"] = orjson.dumps(DEMO_FAVOURITE_TOKENS).decode()
        config = parse_config(
            {
                "store": {"path": str(directory / "dropsync.db")},
                "drop": {"path": str(directory / "drop")},
                "providers": {
                    "crm": {
                        "kind": "crm",
                        "base_url": crm.base_url,
                        "account_id": DEMO_ACCOUNT,
                        "secret_env": "DROPSYNC_DEMO_CRM_TOKEN",
                        "origin": "dropsync-demo",
                    },
                    "favourites": {
                        "kind": "favourites",
                        "base_url": favourites.base_url,
                        "secret_env": "DROPSYNC_DEMO_FAVOURITES_TOKENS",
                        "pull_interval_s": 5,
                    },
                },
                "collections": {
                    "contacts": {"key": "email", "timestamp": "updated_at", "providers": ["crm"]},
                    "favourites": {"providers": ["favourites"]},
                },
            },
            "<demo>",
        )
        sample_files(config.drop_path)
        configure_logging(config.log_level)
        print(
            f"dropsync demo: store {config.store_path}, drop folder {config.drop_path}; "
            f"CRM emulator {crm.base_url}, favourites emulator {favourites.base_url}",
            flush=True,
        )
        return anyio.run(Daemon(config, exit_when_synced=exit_when_synced).run)


def run_emulators(
    host: str, *, crm_port: int, favourites_port: int, registrations_port: int = 8083
) -> int:
    """Serve the provider emulators until SIGINT/SIGTERM."""
    crm, favourites = emulators(crm_port, favourites_port, host)
    registrations = registrations_emulator(registrations_port, host)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with crm, favourites, registrations:
        print(
            f"CRM emulator:        {crm.base_url}  (POST /account/{DEMO_ACCOUNT}/sync_data, "
            f"Authorization: Token token={DEMO_CRM_TOKEN})",
            flush=True,
        )
        print(
            f"favourites emulator: {favourites.base_url}  (GET /getUserFavorites, POST "
            f"/postUserFavorites, Bearer {', '.join(DEMO_FAVOURITE_TOKENS.values())})",
            flush=True,
        )
        print(
            f"registrations emulator: {registrations.base_url}  (POST /api/v1/login "
            f"{{username: {DEMO_REGISTRATIONS['username']}, password: "
            f"{DEMO_REGISTRATIONS['password']}}}, event {DEMO_REGISTRATIONS['event']})",
            flush=True,
        )
        print(
            "faults: POST /_emulator/faults, state: GET /_emulator/state; Ctrl-C stops", flush=True
        )
        stop.wait()
    return 0
