"""Shared set-up of the churn and listener tests: the supervisor and the listener on one
anyio loop (real HTTP on loopback), the churn emulator in its thread, and the daemon as a
subprocess with the churn provider and its listener (tests/conftest.py has the fixtures)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery.providers import ProviderSupervisor
from dropsync.daemon.inbound.listener import Listener
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes

from tests.support import DaemonProcess

TOKEN = "churn-tok-9f8e7d6c5b"
CALLBACK_SECRET = "cb-secret-4a5b6c7d8e"
WEBHOOK_TOKEN = "wh-token-0c1d2e3f4a5b6c7d"
# The environment the churn provider's secrets are read from.
CHURN_ENV = {"CHURN_TOKEN": TOKEN, "CHURN_CALLBACK_SECRET": CALLBACK_SECRET}


def listener_emulator(port: int) -> ChurnEmulator:
    """The churn emulator calling back the listener on ``port``; it waits an hour before
    a callback of its own: the test sends them (``/_emulator/send``)."""
    return ChurnEmulator(
        TOKEN,
        CALLBACK_SECRET,
        callback_base=f"http://127.0.0.1:{port}/callbacks/churn",
        callback_delay_s=3600,
    )


def churn_config(
    tmp_path: Path,
    base_url: str,
    port: int,
    *,
    provider: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Config:
    """A config with collections users and orders routed to one churn provider."""
    churn = {
        "kind": "churn",
        "base_url": base_url,
        "secret_env": "CHURN_TOKEN",
        "callback_secret_env": "CHURN_CALLBACK_SECRET",
        "tables": {"users": "user", "orders": "order"},
        "brand_field": "data.brand",
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
        **(provider or {}),
    }
    raw: dict[str, Any] = {
        "store": {"path": str(tmp_path / "store.db")},
        "drop": {"path": str(tmp_path / "drop")},
        "listener": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "collections": {
            "users": {"key": "data.id", "timestamp": "updatedAt", "providers": ["churn"]},
            "orders": {"key": "data.id", "timestamp": "updatedAt", "providers": ["churn"]},
        },
        "providers": {"churn": churn},
    }
    for name, value in (extra or {}).items():
        raw.setdefault(name, {}).update(value)
    return parse_config(raw, "test.toml")


def crm_webhook_config(
    tmp_path: Path, base_url: str, port: int, *, provider: dict[str, Any] | None = None
) -> Config:
    """A config with collection contacts routed to one CRM provider whose webhook (token in
    CRM_WEBHOOK_TOKEN) comes to the listener on ``port``."""
    crm = {
        "kind": "crm",
        "base_url": base_url,
        "account_id": "acc_1",
        "secret_env": "CRM_TOKEN",
        "webhook_token_env": "CRM_WEBHOOK_TOKEN",
        **(provider or {}),
    }
    raw: dict[str, Any] = {
        "store": {"path": str(tmp_path / "store.db")},
        "drop": {"path": str(tmp_path / "drop")},
        "listener": {"port": port},
        "collections": {
            "contacts": {"key": "email", "timestamp": "updated_at", "providers": ["crm"]}
        },
        "providers": {"crm": crm},
    }
    return parse_config(raw, "test.toml")


def daemon_config(tmp_path: Path, base_url: str, port: int) -> str:
    """The config text of a daemon subprocess: collection users to the churn provider at
    ``base_url`` (brand 15), the listener on ``port``."""
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 10
[listener]
port = {port}
public_url = "http://127.0.0.1:{port}"
[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = ["churn"]
[providers.churn]
kind = "churn"
base_url = "{base_url}"
secret_env = "CHURN_TOKEN"
callback_secret_env = "CHURN_CALLBACK_SECRET"
tables = {{ users = "user" }}
brand_id = 15
"""


def churn_daemon(tmp_path: Path, base_url: str, port: int) -> DaemonProcess:
    """The daemon as a subprocess (not started) on ``daemon_config``, its secrets set."""
    return DaemonProcess(tmp_path, daemon_config(tmp_path, base_url, port), env=CHURN_ENV)


def document(collection: str, i: int, brand: str, ts: int = 1_700_000_000_000) -> Change:
    """A churn envelope record of ``collection`` with client brand ``brand``."""
    body = orjson.dumps(
        {"createdAt": ts, "data": {"brand": brand, "id": i, "name": f"n{i}"}, "updatedAt": ts},
        option=orjson.OPT_SORT_KEYS,
    ).decode()
    return Change(
        collection, str(i), body, ts, False, "drop", hashlib.sha256(body.encode()).hexdigest()[:32]
    )


async def merge(store: Store, config: Config, changes: list[Change]) -> None:
    """Merge changes as the inbox would (their outbox entries are queued)."""
    await store.transact(
        lambda conn: apply_changes(conn, changes, config.routes(), now=int(time.time() * 1000))
    )


async def eventually(predicate: Callable[[], Any], what: str, limit_s: float = 30) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; the timeout only bounds a hang."""
    with anyio.fail_after(limit_s):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await anyio.sleep(0.02)
    raise AssertionError(what)  # pragma: no cover


class Running:
    """The running parts, for the test body."""

    def __init__(
        self, store: Store, supervisor: ProviderSupervisor, listener: Listener, port: int
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.listener = listener
        self.url = f"http://127.0.0.1:{port}"

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the store (between transactions)."""
        async with self.store.read() as db:
            return [tuple(r) for r in await db.execute_fetchall(sql, params)]

    async def post(self, path: str, body: bytes, **headers: str) -> httpx.Response:
        """POST to the listener."""
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(self.url + path, content=body, headers=headers)


@asynccontextmanager
async def running(config: Config, port: int) -> AsyncIterator[Running]:
    """The supervisor and the listener, as the daemon runs them."""
    store = await Store.open(config.store_path)
    supervisor = ProviderSupervisor(store, config)
    listener = Listener(store, config, wake=supervisor.wake, adapter=supervisor.adapter)
    supervisor.listener_options = listener.adapter_options
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            tg.start_soon(listener.run)
            parts = Running(store, supervisor, listener, port)

            async def up() -> bool:
                try:
                    async with httpx.AsyncClient(timeout=2) as client:
                        return (await client.get(parts.url + "/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(up, "the listener answers")
            await eventually(lambda: supervisor.flushers, "the flushers run")
            yield parts
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
