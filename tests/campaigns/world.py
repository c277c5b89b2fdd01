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
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.crm import CrmEmulator
from dropsync.adapters.emulators.favourites import FavouritesEmulator

from tests.campaigns import oracle
from tests.campaigns.load import FAVOURITE_USERS, Load
from tests.campaigns.oracle import Violation
from tests.campaigns.proxy import FaultProxy
from tests.support import DaemonProcess

CRM_TOKEN = "crm-campaign-token-5b1e9c"
FAVOURITE_TOKENS = {user: f"fav-campaign-token-{user}-77d0a3" for user in FAVOURITE_USERS}
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
    exits: list[str] = field(default_factory=list)  # daemon exits nobody asked for
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

    def proxy(self, which: str) -> FaultProxy:
        """The fault proxy in front of ``crm`` or ``favourites``."""
        server = self.crm_proxy if which == "crm" else self.favourites_proxy
        assert server is not None, "this world has no fault proxies"
        proxy = server.emulator
        assert isinstance(proxy, FaultProxy)
        return proxy

    @property
    def favourites_emulator(self) -> FavouritesEmulator:
        """The favourites emulator behind its server."""
        emulator = self.favourites.emulator
        assert isinstance(emulator, FavouritesEmulator)
        return emulator

    def settle(self, timeout: float = 120.0, tend: Callable[[], None] | None = None) -> str | None:
        """Wait until nothing is left to do and the records show every winner.

        Returns None when settled, else what was still waiting when ``timeout`` ran out (the
        timeout only bounds a wedge; the oracle then says what is wrong). Whether the providers
        got everything is the oracle's ``delivered``, not part of this: an empty outbox with a
        provider short of data is a loss, not a wedge.
        """
        deadline = time.monotonic() + timeout
        waiting: str | None = "not looked yet"
        while time.monotonic() < deadline:
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
                    return None
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
        for proxy in (self.crm_proxy, self.favourites_proxy):
            if proxy is not None:
                if isinstance(proxy.emulator, FaultProxy):
                    proxy.emulator.release()  # a held answer must not keep the server up
                proxy.stop()
        self.crm.stop()
        self.favourites.stop()


def config_text(
    root: Path,
    crm_url: str,
    favourites_url: str,
    *,
    extra_providers: str = "",
    backoff_cap_s: float = 1.0,
    timeout_s: float = 5.0,
    pull_interval_s: float = 0.5,
    parser_process_min_mb: float = 0.02,
    secrets_via: str = "env",
) -> str:
    """The daemon's config: contacts to the CRM, favourites both ways, users kept locally."""
    if secrets_via == "credential":
        crm_secret, favourites_secret = 'credential = "crm"', 'credential = "favourites"'
    else:
        crm_secret = 'secret_env = "CAMPAIGN_CRM_TOKEN"'
        favourites_secret = 'secret_env = "CAMPAIGN_FAVOURITES_TOKENS"'
    return f"""
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
timeout_s = {timeout_s}
backoff_base_s = 0.05
backoff_cap_s = {backoff_cap_s}
[providers.favourites]
kind = "favourites"
base_url = "{favourites_url}"
{favourites_secret}
pull_interval_s = {pull_interval_s}
timeout_s = {timeout_s}
backoff_base_s = 0.05
backoff_cap_s = {backoff_cap_s}
{extra_providers}
"""


def make_world(
    root: Path,
    seed: int,
    *,
    proxies: bool = False,
    proxy_timeout_s: float = 1.0,
    env: dict[str, str] | None = None,
    load_options: dict[str, Any] | None = None,
    **config: Any,
) -> World:
    """Start the emulators (behind fault proxies if ``proxies``) and build the world.

    The daemon is not started.
    """
    root.mkdir(parents=True, exist_ok=True)
    crm = EmulatorServer(CrmEmulator({"acc_1": CRM_TOKEN}, webhook_delay_s=0.05)).start()
    favourites = EmulatorServer(
        FavouritesEmulator({token: user for user, token in FAVOURITE_TOKENS.items()})
    ).start()
    crm_proxy = favourites_proxy = None
    crm_url, favourites_url = crm.base_url, favourites.base_url
    if proxies:
        crm_proxy = EmulatorServer(
            FaultProxy(crm.base_url, seed ^ 0xC4, timeout_s=proxy_timeout_s)
        ).start()
        favourites_proxy = EmulatorServer(
            FaultProxy(favourites.base_url, seed ^ 0xFA, timeout_s=proxy_timeout_s)
        ).start()
        crm_url, favourites_url = crm_proxy.base_url, favourites_proxy.base_url
    secrets = {
        "crm": CRM_TOKEN,
        "favourites": orjson.dumps(FAVOURITE_TOKENS).decode(),
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
        }
    daemon = DaemonProcess(
        root,
        config_text(root, crm_url, favourites_url, **config),
        env={**secret_env, **(env or {})},
    )
    favourites_emulator = favourites.emulator
    assert isinstance(favourites_emulator, FavouritesEmulator)
    load = Load(
        root / "drop",
        root / "store.db",
        seed,
        favourites=favourites_emulator,
        **(load_options or {}),
    )
    return World(root, seed, crm, favourites, daemon, load, crm_proxy, favourites_proxy)
