"""``dropsync demo`` and ``dropsync emulate``: the daemon on built-in emulated providers.

The emulators are real HTTP servers on 127.0.0.1 (``adapters.emulators``): the CRM,
the favourites app, the registration system and the churn tool. The demo starts all
four on free ports, writes its config file into its folder (``dropsync-demo/dropsync.toml``,
so ``dropsync status --config`` finds its store; the secrets are environment
variables the demo sets, never in the file), drops sample files for each provider's
collections, and runs the daemon against them. ``daemon.demo_view`` shows it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import threading
from pathlib import Path

import anyio
import orjson
from dropsync.adapters.emulators.churn import ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.crm import CrmEmulator
from dropsync.adapters.emulators.favourites import FavouritesEmulator
from dropsync.adapters.emulators.registrations import RegistrationsEmulator
from dropsync.daemon.config import load_config
from dropsync.daemon.demo_view import DemoView, is_synced
from dropsync.daemon.errors import UsageError
from dropsync.daemon.logs import configure_logging
from dropsync.daemon.runner import Daemon
from dropsync.store.queries import progress_summary

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


DEMO_CHURN = {"token": "demo-churn-token", "callback_secret": "demo-churn-callback-secret"}
DEMO_CRM_WEBHOOK_TOKEN = "demo-crm-webhook-token-5f1e"
MARKER = "# dropsync demo"  # the first line of the demo's config: its folder may be reset


def churn_emulator(
    port: int = 0, host: str = "127.0.0.1", callback_base: str | None = None
) -> EmulatorServer:
    """The churn tool emulator with the demo credentials; it calls ``callback_base`` back."""
    emulator = ChurnEmulator(
        DEMO_CHURN["token"],
        DEMO_CHURN["callback_secret"],
        callback_base=callback_base,
        callback_delay_s=0.5,
    )
    return EmulatorServer(emulator, port, host)


def _guest(email: str, first: str, last: str, at: str, **extra: object) -> dict[str, object]:
    return {"email": email, "name_first": first, "name_last": last, "updated_at": at, **extra}


def _user(user_id: int, email: str, city: str, brand: int, at: int) -> dict[str, object]:
    return {
        "data": {"id": user_id, "email": email, "city": city, "brand": brand},
        "createdAt": at - 86_400_000,
        "updatedAt": at,
    }


SAMPLES: dict[str, list[dict[str, object]]] = {
    # The hotel CRM: guests with, for one, a purchase.
    "contacts/guests.json": [
        _guest("ann@example.com", "Ann", "Lee", "2024-05-02T10:45:12.798Z"),
        _guest(
            "bob@example.com",
            "Bob",
            "Ray",
            "2024-05-03T08:00:00Z",
            purchase={
                "transaction_code": "T-1001",
                "price": 340,
                "currency": "USD",
                "product_uuid": "room-deluxe",
                "status": "check_in",
            },
        ),
        _guest("chloe@example.com", "Chloé", "Martin", "2024-05-03T09:30:00Z"),
    ],
    # The event app: favourites added and removed by two users.
    "favourites/app.json": [
        {
            "user": "bob",
            "item": "session_114582",
            "action": "ADD",
            "actionDate": "2024-05-03T12:15:00.128Z",
        },
        {
            "user": "alice",
            "item": "session_30511",
            "action": "ADD",
            "actionDate": "2024-05-03T12:20:41.002Z",
        },
    ],
    # The registration system: two people ask for seats in a keynote that has two, one more
    # asks for the same keynote and is refused (it is full).
    "registration_requests/seats.json": [
        {
            "request": f"r-{n}",
            "participantId": f"p{n}",
            "sessionId": "s1",
            "action": "register",
            "requested_at": f"2024-05-04T09:0{n}:00Z",
        }
        for n in (1, 2, 3)
    ],
    # The churn tool: the client's users, in the churn envelope, of two brands.
    "users/users.ndjson": [
        _user(123, "john@doe.com", "Limassol", 7, 1696821819000),
        _user(124, "maria@example.com", "Nicosia", 7, 1696821820000),
        _user(125, "yusuf@example.com", "Paphos", 7, 1696821821000),
    ],
}
LATE = {
    "contacts/late-arrivals.json": [
        _guest("dora@example.com", "Dora", "Quinn", "2024-05-04T18:00:00Z"),
        _guest("emil@example.com", "Emil", "Nowak", "2024-05-04T18:05:00Z"),
        _guest("fay@example.com", "Fay", "Okafor", "2024-05-04T18:10:00Z"),
    ]
}


def write_samples(drop: Path, samples: dict[str, list[dict[str, object]]]) -> None:
    """Drop sample files the atomic way (a temporary name, then a rename)."""
    for name, documents in samples.items():
        path = drop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".ndjson"):
            data = b"".join(orjson.dumps(d) + b"\n" for d in documents)
        else:
            data = orjson.dumps(documents, option=orjson.OPT_INDENT_2)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        temporary.rename(path)


def sample_files(drop: Path) -> None:
    """Write the sample drop folder."""
    write_samples(drop, SAMPLES)


def demo_config(directory: Path, urls: dict[str, str], listener_port: int) -> str:
    """The demo's config file (secrets by environment variable, set by the demo itself)."""
    return f"""{MARKER}: written by `dropsync demo`; the demo sets the DROPSYNC_DEMO_* variables.
# `dropsync status --config {directory / "dropsync.toml"}` reads it (only [store]).

[store]
path = "{directory / "dropsync.db"}"

[drop]
path = "{directory / "drop"}"
settle_ms = 20

[listener]
port = {listener_port}
public_url = "http://127.0.0.1:{listener_port}"

[collections.contacts]
key = "email"
timestamp = "updated_at"
providers = ["crm"]

[collections.favourites]
providers = ["favourites"]

[collections.registration_requests]
key = "request"
timestamp = "requested_at"

[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = ["churn"]

[providers.crm]
kind = "crm"
base_url = "{urls["crm"]}"
account_id = "{DEMO_ACCOUNT}"
secret_env = "DROPSYNC_DEMO_CRM_TOKEN"
webhook_token_env = "DROPSYNC_DEMO_CRM_WEBHOOK_TOKEN"
origin = "dropsync-demo"
backoff_base_s = 0.5
backoff_cap_s = 2

[providers.favourites]
kind = "favourites"
base_url = "{urls["favourites"]}"
secret_env = "DROPSYNC_DEMO_FAVOURITES_TOKENS"
pull_interval_s = 5
backoff_cap_s = 2

[providers.registrations]
kind = "registrations"
base_url = "{urls["registrations"]}"
username = "{DEMO_REGISTRATIONS["username"]}"
event_id = "{DEMO_REGISTRATIONS["event"]}"
secret_env = "DROPSYNC_DEMO_REGISTRATIONS_PASSWORD"
concurrent_sessions_title = "Keynotes"
pull_interval_s = 10
backoff_cap_s = 2

[providers.churn]
kind = "churn"
base_url = "{urls["churn"]}"
secret_env = "DROPSYNC_DEMO_CHURN_TOKEN"
callback_secret_env = "DROPSYNC_DEMO_CHURN_CALLBACK_SECRET"
tables = {{ users = "user" }}
brand_id = 15
backoff_cap_s = 2
"""


def demo_environment() -> dict[str, str]:
    """The demo's secrets, as the variables its config names."""
    return {
        "DROPSYNC_DEMO_CRM_TOKEN": DEMO_CRM_TOKEN,
        "DROPSYNC_DEMO_CRM_WEBHOOK_TOKEN": DEMO_CRM_WEBHOOK_TOKEN,
        "DROPSYNC_DEMO_FAVOURITES_TOKENS": orjson.dumps(DEMO_FAVOURITE_TOKENS).decode(),
        "DROPSYNC_DEMO_REGISTRATIONS_PASSWORD": DEMO_REGISTRATIONS["password"],
        "DROPSYNC_DEMO_CHURN_TOKEN": DEMO_CHURN["token"],
        "DROPSYNC_DEMO_CHURN_CALLBACK_SECRET": DEMO_CHURN["callback_secret"],
    }


def prepare_folder(directory: Path) -> None:
    """A fresh demo folder: a previous demo's is cleared; any other non-empty folder refused."""
    config = directory / "dropsync.toml"
    if directory.exists() and any(directory.iterdir()):
        if not (config.is_file() and config.read_text(encoding="utf-8").startswith(MARKER)):
            raise UsageError(
                f"{directory} is not empty and holds no earlier demo: give another --dir"
            )
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)


def synced_also(db: sqlite3.Connection) -> bool:
    """The demo is synced once confirmations arrived and each pulling provider answered."""
    return is_synced(progress_summary(db))


def run_demo(directory: Path, *, exit_when_synced: bool) -> int:
    """Run the daemon on sample files in ``directory`` against the four emulators."""
    directory = directory.resolve()
    prepare_folder(directory)
    listener_port = _free_port()
    crm, favourites = emulators()
    registrations = registrations_emulator()
    churn = churn_emulator(callback_base=f"http://127.0.0.1:{listener_port}/callbacks/churn")
    servers = {"crm": crm, "favourites": favourites, "registrations": registrations, "churn": churn}
    with crm, favourites, registrations, churn:
        os.environ.update(demo_environment())
        config_path = directory / "dropsync.toml"
        urls = {name: server.base_url for name, server in servers.items()}
        config_path.write_text(demo_config(directory, urls, listener_port), encoding="utf-8")
        config = load_config(str(config_path))
        view = DemoView(
            directory, config_path, config.store_path, servers, keeps_running=not exit_when_synced
        )
        if view.interactive:
            configure_logging(config.log_level, view.log_file())
        else:
            configure_logging(config.log_level)
        view.intro()

        def ready() -> None:
            # Dropped once the daemon runs, as files arrive in real life.
            sample_files(config.drop_path)
            view.start()

        daemon = Daemon(
            config,
            config_arg=str(config_path),
            exit_when_synced=exit_when_synced,
            synced_also=synced_also,
            on_ready=ready,
        )
        try:
            code = anyio.run(daemon.run)
        finally:
            view.stop()
        missing = view.summary(synced=code == 0 and exit_when_synced)
        # Dead letters and rejections leave nothing pending, so the daemon calls it synced:
        # the demo does not, since not every sample reached its provider.
        return 1 if code == 0 and missing else code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_emulators(
    host: str,
    *,
    crm_port: int,
    favourites_port: int,
    registrations_port: int = 8083,
    churn_port: int = 8084,
) -> int:
    """Serve the provider emulators until SIGINT/SIGTERM."""
    crm, favourites = emulators(crm_port, favourites_port, host)
    registrations = registrations_emulator(registrations_port, host)
    churn = churn_emulator(churn_port, host)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with crm, favourites, registrations, churn:
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
            f"churn emulator:      {churn.base_url}  (POST /client-files, Authorization: "
            f"Bearer {DEMO_CHURN['token']}; callbacks signed with {DEMO_CHURN['callback_secret']})",
            flush=True,
        )
        print(
            "faults: POST /_emulator/faults, state: GET /_emulator/state; Ctrl-C stops", flush=True
        )
        stop.wait()
    return 0
