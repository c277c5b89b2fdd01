"""The world a campaign runs in: a folder, the provider emulators, the config, the daemon.

Everything is real: the emulators are HTTP servers on loopback ports (optionally behind a
``FaultProxy``), the daemon is ``dropsync run`` as a subprocess that the campaign kills and
restarts, and the store is read with sqlite3 as a user would.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import Emulator, EmulatorServer
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.registrations.emulator import RegistrationsEmulator

from tests.harness import oracle
from tests.harness.load import (
    CHURN_BRAND,
    FAVOURITE_USERS,
    PARTICIPANTS,
    SESSIONS,
    SMALL_SESSIONS,
    Load,
)
from tests.harness.oracle import Violation
from tests.harness.proxy import FaultProxy
from tests.support import DaemonProcess, free_port

CRM_TOKEN = "crm-campaign-token-5b1e9c"
FAVOURITE_TOKENS = {user: f"fav-campaign-token-{user}-77d0a3" for user in FAVOURITE_USERS}
REGISTRATIONS_PASSWORD = "lenos-campaign-password-3c8d1f"
CHURN_TOKEN = "churn-campaign-token-a91e42"
CHURN_CALLBACK_SECRET = "churn-campaign-callback-6d0b7e"
BASE_KINDS = ("crm", "favourites")
ALL_KINDS = ("crm", "favourites", "registrations", "churn")
REGISTRATIONS = "lenos"  # the registrations provider's name in the config
SEED_VARIABLE = "DROPSYNC_CAMPAIGN_SEED"
LOUD_LEVELS = ("error", "critical")


def campaign_seed(default: int | None = None) -> int:
    """The seed: ``$DROPSYNC_CAMPAIGN_SEED``, else ``default``, else a fresh random one."""
    given = os.environ.get(SEED_VARIABLE)
    if given:
        return int(given)
    return default if default is not None else random.SystemRandom().randrange(1 << 31)


@dataclass
class World:
    """A campaign's folder, emulators and daemon; ``close()`` stops them."""

    root: Path
    seed: int
    crm: EmulatorServer
    favourites: EmulatorServer
    daemon: DaemonProcess
    load: Load
    crm_proxy: EmulatorServer | None = None
    favourites_proxy: EmulatorServer | None = None
    registrations: EmulatorServer | None = None
    churn: EmulatorServer | None = None
    registrations_proxy: EmulatorServer | None = None
    churn_proxy: EmulatorServer | None = None
    exits: list[str] = field(default_factory=list)  # daemon exits nobody asked for
    waits: list[str] = field(default_factory=list)  # what a settle waited on, every 10 s
    _settled_pids: set[int] = field(default_factory=set)  # exits asked for or reported

    @property
    def store(self) -> Path:
        """The store's path."""
        return self.root / "store.db"

    @property
    def drop(self) -> Path:
        """The drop folder."""
        return self.root / "drop"

    @property
    def crm_emulator(self) -> CrmEmulator:
        """The CRM emulator behind its server."""
        emulator = self.crm.emulator
        assert isinstance(emulator, CrmEmulator)
        return emulator

    @property
    def kinds(self) -> tuple[str, ...]:
        """The provider kinds this world runs (each one provider of that kind)."""
        extra = tuple(
            kind
            for kind, server in (("registrations", self.registrations), ("churn", self.churn))
            if server is not None
        )
        return BASE_KINDS + extra

    def proxy_server(self, which: str) -> EmulatorServer:
        """The server of the fault proxy in front of a kind's emulator."""
        server = {
            "crm": self.crm_proxy,
            "favourites": self.favourites_proxy,
            "registrations": self.registrations_proxy,
            "churn": self.churn_proxy,
        }[which]
        assert server is not None, f"this world has no fault proxy for {which}"
        return server

    def proxy(self, which: str) -> FaultProxy:
        """The fault proxy in front of a kind's emulator (``crm``, ``favourites``, ...)."""
        server = self.proxy_server(which)
        proxy = server.emulator
        assert isinstance(proxy, FaultProxy)
        return proxy

    @property
    def favourites_emulator(self) -> FavouritesEmulator:
        """The favourites emulator behind its server."""
        emulator = self.favourites.emulator
        assert isinstance(emulator, FavouritesEmulator)
        return emulator

    @property
    def registrations_emulator(self) -> RegistrationsEmulator | None:
        """The registrations emulator, when this world has one."""
        if self.registrations is None:
            return None
        emulator = self.registrations.emulator
        assert isinstance(emulator, RegistrationsEmulator)
        return emulator

    @property
    def churn_emulator(self) -> ChurnEmulator | None:
        """The churn emulator, when this world has one."""
        if self.churn is None:
            return None
        emulator = self.churn.emulator
        assert isinstance(emulator, ChurnEmulator)
        return emulator

    def providers_behind(self) -> str | None:
        """What the providers' side still lacks for the oracle to judge, else None: a
        registration request not decided yet, pulled participants and registrations not yet
        like the emulator's, a sync-status callback the churn tool still owes for an upload."""
        registrations = self.registrations_emulator
        if registrations is not None:
            view = oracle.StoreView(self.store)
            # A request still being asked changes the provider after this look: the pulled
            # state is compared once every request is decided (seen in CI, seed 1313: a
            # cancel confirmed just after the comparison, and the daemon stopped before the
            # next pull brought it).
            asked = self.load.ledger.snapshot_requests()
            undecided = [
                r.key
                for r in asked
                if (view.requests.get(r.key) or ("pending",))[0] not in ("confirmed", "refused")
            ]
            if undecided:
                return f"{len(undecided)} registration request(s) not decided, e.g. {undecided[0]}"
            behind = oracle.pulled(view, registrations)
            if behind:
                return f"{len(behind)} pulled item(s) not like the provider's, e.g. {behind[0]}"
        churn = self.churn_emulator
        if churn is not None:
            owed = oracle.callbacks_owed(churn)
            if owed:
                return f"the churn tool owes {owed} sync-status callback(s)"
        return None

    def settle(self, timeout: float = 120.0, tend: Callable[[], None] | None = None) -> str | None:
        """Wait until nothing is left to do and the records show every winner.

        Returns None when settled, else what was still waiting when ``timeout`` ran out (the
        timeout only bounds a wedge; the oracle then says what is wrong). Whether the providers
        got everything is the oracle's ``delivered``, not part of this: an empty outbox with a
        provider short of data is a loss, not a wedge.
        """
        started = time.monotonic()
        deadline = started + timeout
        noted = started
        waiting: str | None = "not looked yet"
        while time.monotonic() < deadline:
            if time.monotonic() - noted >= 10:
                noted = time.monotonic()
                self.waits.append(f"{noted - started:.0f} s: {str(waiting)[:200]}")
            self.revive()
            if tend is not None:
                tend()
            waiting = oracle.is_settled(self.store, self.drop)
            if waiting is None:
                view = oracle.StoreView(self.store)
                files, rows, remote = self.load.ledger.snapshot()
                best = oracle.winners(files, rows, remote)
                behind = oracle.winners_in_records(view, best)
                if not behind:
                    waiting = self.providers_behind()
                    if waiting is None:
                        return None
                else:
                    waiting = f"{len(behind)} winner(s) not in place yet, e.g. {behind[0]}"
            time.sleep(0.2)
        return waiting

    def check_alive(self) -> None:
        """Record (once) a daemon that exited without being asked to."""
        process = self.daemon.process
        if process is None or process.poll() is None or process.pid in self._settled_pids:
            return
        self._settled_pids.add(process.pid)
        self.exits.append(f"daemon exited by itself with code {process.returncode}")

    def revive(self) -> None:
        """A daemon that exited by itself is recorded and started again, as systemd's
        ``Restart=on-failure`` would."""
        self.check_alive()
        process = self.daemon.process
        if process is not None and process.poll() is not None and len(self.exits) < 50:
            self.daemon.spawn()

    def run_for(self, seconds: float) -> None:
        """Let time pass, reviving the daemon if it exits by itself."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.revive()
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the daemon (noting first whether it had already died by itself)."""
        self.check_alive()
        process = self.daemon.process
        if process is not None and process.poll() is None:
            self._settled_pids.add(process.pid)
            process.kill()
            process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM the daemon and return its exit code."""
        self.check_alive()
        process = self.daemon.process
        assert process is not None
        if process.poll() is not None:
            return process.returncode
        self._settled_pids.add(process.pid)
        return self.daemon.stop()

    def final_violations(self) -> list[Violation]:
        """Every invariant, plus daemon exits nobody asked for and the load's own failures."""
        found = oracle.settled(
            self.store,
            self.drop,
            self.load.ledger,
            crm=self.crm_emulator,
            favourites=self.favourites_emulator,
            registrations=self.registrations_emulator,
            churn=self.churn_emulator,
        )
        found += [Violation("daemon_survives", text) for text in self.exits]
        found += [Violation("load", text) for text in self.load.errors]
        return found

    def all_events(self) -> list[dict[str, Any]]:
        """Every log line of every run; a line that is not JSON (a raw traceback) as ``raw``."""
        if not self.daemon.log_path.exists():
            return []
        events: list[dict[str, Any]] = []
        for raw in self.daemon.log_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                entry = None
            if isinstance(entry, dict):
                events.append(entry)
            else:
                events.append({"event": "raw", "text": raw.decode(errors="replace")[:300]})
        return events

    def error_lines(self) -> list[dict[str, Any]]:
        """Every log line of every run at error level, or not JSON at all (a raw traceback)."""
        return [
            e for e in self.all_events() if e["event"] == "raw" or e.get("level") in LOUD_LEVELS
        ]

    def close(self) -> None:
        """Stop everything this world started."""
        self.load.close()
        self.daemon.close()
        for proxy in (
            self.crm_proxy,
            self.favourites_proxy,
            self.registrations_proxy,
            self.churn_proxy,
        ):
            if proxy is not None:
                if isinstance(proxy.emulator, FaultProxy):
                    proxy.emulator.release()  # a held answer must not keep the server up
                proxy.stop()
        for server in (self.crm, self.favourites, self.registrations, self.churn):
            if server is not None:
                server.stop()


def config_text(
    root: Path,
    crm_url: str,
    favourites_url: str,
    *,
    registrations_url: str | None = None,
    churn_url: str | None = None,
    listener_port: int | None = None,
    extra_providers: str = "",
    backoff_cap_s: float = 1.0,
    timeout_s: float = 5.0,
    pull_interval_s: float = 0.5,
    parser_process_min_mb: float = 0.02,
    secrets_via: str = "env",
) -> str:
    """The daemon's config: contacts to the CRM, favourites both ways, users kept locally
    (or, with ``churn_url``, sent to the churn tool, whose callbacks reach the listener on
    ``listener_port``), and with ``registrations_url`` a registrations provider (participants
    and registrations pulled in pages of 10, so the provider's changes land while a listing
    is paged; registration requests asked)."""
    credential = secrets_via == "credential"
    if credential:
        crm_secret, favourites_secret = 'credential = "crm"', 'credential = "favourites"'
        lenos_secret, churn_secret = 'credential = "lenos"', 'credential = "churn"'
        callback_secret = 'callback_credential = "churn-callback"'
    else:
        crm_secret = 'secret_env = "CAMPAIGN_CRM_TOKEN"'
        favourites_secret = 'secret_env = "CAMPAIGN_FAVOURITES_TOKENS"'
        lenos_secret = 'secret_env = "CAMPAIGN_LENOS_PASSWORD"'
        churn_secret = 'secret_env = "CAMPAIGN_CHURN_TOKEN"'
        callback_secret = 'callback_secret_env = "CAMPAIGN_CHURN_CALLBACK_SECRET"'
    retry = f"""timeout_s = {timeout_s}
backoff_base_s = 0.05
backoff_cap_s = {backoff_cap_s}"""
    text = f"""
[store]
path = "{root / "store.db"}"
[drop]
path = "{root / "drop"}"
settle_ms = 20
batch = 50
rescan_s = 2
parser_process_min_mb = {parser_process_min_mb}
[daemon]
inbox_poll_s = 0.2
shutdown_grace_s = 20
[collections.contacts]
key = "email"
timestamp = "updated_at"
providers = ["crm"]
[collections.favourites]
providers = ["favourites"]
[providers.crm]
kind = "crm"
base_url = "{crm_url}"
account_id = "acc_1"
{crm_secret}
batch_max_items = 40
{retry}
[providers.favourites]
kind = "favourites"
base_url = "{favourites_url}"
{favourites_secret}
pull_interval_s = {pull_interval_s}
{retry}
"""
    if listener_port is not None:
        text += f"""[listener]
port = {listener_port}
public_url = "http://127.0.0.1:{listener_port}"
"""
    if churn_url is not None:
        text += f"""[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = ["churn"]
[providers.churn]
kind = "churn"
base_url = "{churn_url}"
{churn_secret}
{callback_secret}
tables = {{ users = "user" }}
brand_id = {CHURN_BRAND}
batch_max_items = 200
{retry}
"""
    if registrations_url is not None:
        text += f"""[providers.{REGISTRATIONS}]
kind = "registrations"
base_url = "{registrations_url}"
username = "fp-bot"
event_id = "ev-2026"
{lenos_secret}
pull_interval_s = {pull_interval_s}
page_size = 10
{retry}
"""
    return text + extra_providers


def _emulator_server(
    emulator: Emulator, seed: int, proxied: bool, timeout_s: float
) -> tuple[EmulatorServer, EmulatorServer | None, str]:
    """Start an emulator (behind a fault proxy if ``proxied``): (server, proxy, URL to use)."""
    server = EmulatorServer(emulator).start()
    if not proxied:
        return server, None, server.base_url
    proxy = EmulatorServer(FaultProxy(server.base_url, seed, timeout_s=timeout_s)).start()
    return server, proxy, proxy.base_url


def registrations_emulator() -> RegistrationsEmulator:
    """The registrations provider's event: the load's participants, its sessions (two of
    them nearly full, so some requests are refused for capacity)."""
    emulator = RegistrationsEmulator(password=REGISTRATIONS_PASSWORD)
    emulator.seed(participants=PARTICIPANTS, sessions=SESSIONS)
    for session, capacity in SMALL_SESSIONS.items():
        with emulator.lock:
            emulator.items["sessions"][session]["capacity"] = capacity
    return emulator


def make_world(
    root: Path,
    seed: int,
    *,
    proxies: bool = False,
    proxy_timeout_s: float = 1.0,
    kinds: tuple[str, ...] = BASE_KINDS,
    env: dict[str, str] | None = None,
    load_options: dict[str, Any] | None = None,
    **config: Any,
) -> World:
    """Start the emulators of ``kinds`` (behind fault proxies if ``proxies``) and build the
    world. The daemon is not started.
    """
    root.mkdir(parents=True, exist_ok=True)
    crm, crm_proxy, crm_url = _emulator_server(
        CrmEmulator({"acc_1": CRM_TOKEN}, webhook_delay_s=0.05),
        seed ^ 0xC4,
        proxies,
        proxy_timeout_s,
    )
    favourites, favourites_proxy, favourites_url = _emulator_server(
        FavouritesEmulator({token: user for user, token in FAVOURITE_TOKENS.items()}),
        seed ^ 0xFA,
        proxies,
        proxy_timeout_s,
    )
    registrations = registrations_proxy = churn = churn_proxy = None
    if "registrations" in kinds:
        registrations, registrations_proxy, config["registrations_url"] = _emulator_server(
            registrations_emulator(), seed ^ 0x1E, proxies, proxy_timeout_s
        )
    if "churn" in kinds:
        # The tool calls the daemon's listener back directly (never through the proxy).
        port = free_port()
        config["listener_port"] = port
        churn, churn_proxy, config["churn_url"] = _emulator_server(
            ChurnEmulator(
                CHURN_TOKEN,
                CHURN_CALLBACK_SECRET,
                callback_base=f"http://127.0.0.1:{port}/callbacks/churn",
                callback_delay_s=0.2,
            ),
            seed ^ 0xC7,
            proxies,
            proxy_timeout_s,
        )
    secrets = {
        "crm": CRM_TOKEN,
        "favourites": orjson.dumps(FAVOURITE_TOKENS).decode(),
        "lenos": REGISTRATIONS_PASSWORD,
        "churn": CHURN_TOKEN,
        "churn-callback": CHURN_CALLBACK_SECRET,
    }
    if config.get("secrets_via") == "credential":
        # systemd's LoadCredential= layout: the secrets are files, not in the environment.
        credentials = root / "credentials"
        credentials.mkdir(exist_ok=True)
        for name, value in secrets.items():
            (credentials / name).write_text(value)
        secret_env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    else:
        secret_env = {
            "CAMPAIGN_CRM_TOKEN": secrets["crm"],
            "CAMPAIGN_FAVOURITES_TOKENS": secrets["favourites"],
            "CAMPAIGN_LENOS_PASSWORD": secrets["lenos"],
            "CAMPAIGN_CHURN_TOKEN": secrets["churn"],
            "CAMPAIGN_CHURN_CALLBACK_SECRET": secrets["churn-callback"],
        }
    daemon = DaemonProcess(
        root,
        config_text(root, crm_url, favourites_url, **config),
        env={**secret_env, **(env or {})},
    )
    favourites_emulator = favourites.emulator
    assert isinstance(favourites_emulator, FavouritesEmulator)
    registrations_emulator_ = None if registrations is None else registrations.emulator
    assert registrations_emulator_ is None or isinstance(
        registrations_emulator_, RegistrationsEmulator
    )
    load = Load(
        root / "drop",
        root / "store.db",
        seed,
        favourites=favourites_emulator,
        registrations=registrations_emulator_,
        **(load_options or {}),
    )
    return World(
        root,
        seed,
        crm,
        favourites,
        daemon,
        load,
        crm_proxy,
        favourites_proxy,
        registrations=registrations,
        churn=churn,
        registrations_proxy=registrations_proxy,
        churn_proxy=churn_proxy,
    )
