"""The puller meets the same answers as the flusher: it waits for a Retry-After, keeps the
flusher's stored next attempt, and shows what went wrong until a pull works again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.favourites.adapter import FavouritesProvider
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery.providers import ProviderSupervisor
from dropsync.store import outbox
from dropsync.store.handle import Store

pytestmark = pytest.mark.anyio
TOKEN = "tok-alice-pull"


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    emulator = FavouritesEmulator({TOKEN: "alice"})
    emulator.seed("alice", [{"item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00Z"}])
    with EmulatorServer(emulator) as running:
        yield running


def config(tmp_path: Path, base_url: str) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "providers": {
                "fav": {
                    "kind": "favourites",
                    "base_url": base_url,
                    "secret_env": "UNUSED",
                    "pull_interval_s": 0.05,
                }
            },
        },
        "test.toml",
    )


async def pull_until(
    store: Store, loaded: Config, server: EmulatorServer, gets: int, state: str | None = None
) -> list[float]:
    """Run the pull loop until the provider has seen ``gets`` GETs (and the provider's state
    is ``state``); the GETs' arrival times."""
    supervisor = ProviderSupervisor(store, loaded)
    provider = FavouritesProvider(
        "fav", server.base_url, favourite_options({}), {"alice": TOKEN}, 5, None
    )

    async def done() -> bool:
        if len(server.emulator.requests("/getUserFavorites")) < gets:
            return False
        now = await store.call(outbox.provider_state, "fav")
        return state is None or (now is not None and now.state == state)

    async with provider, anyio.create_task_group() as tg:
        tg.start_soon(supervisor._pull_loop, loaded.providers["fav"], provider)
        with anyio.fail_after(30):
            while not await done():  # noqa: ASYNC110 -- polling the store
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return [a.monotonic for a in server.emulator.requests("/getUserFavorites")]


async def test_the_next_pull_waits_for_the_retry_after(
    tmp_path: Path, server: EmulatorServer
) -> None:
    loaded = config(tmp_path, server.base_url)
    server.faults.update(status=429, count=1, retry_after="1")
    async with await Store.open(loaded.store_path) as store:
        await store.transact(outbox.register_providers, [("fav", "favourites")], now=1)
        first, second = (await pull_until(store, loaded, server, 2))[:2]
    assert second - first >= 1.0  # pull_interval_s is 0.05: the provider's 1 s governs


async def test_a_refused_pull_keeps_the_flushers_next_attempt_and_a_good_one_clears_the_error(
    tmp_path: Path, server: EmulatorServer
) -> None:
    loaded = config(tmp_path, server.base_url)
    later = 4_000_000_000_000
    async with await Store.open(loaded.store_path) as store:
        await store.transact(outbox.register_providers, [("fav", "favourites")], now=1)
        await store.transact(
            outbox.set_provider_state,
            "fav",
            state="backing-off",
            now=1,
            next_attempt_at=later,
            failures=3,
        )
        server.faults.update(status=401, count=1)
        await pull_until(store, loaded, server, 1, "auth-failed")
        refused = await store.call(outbox.provider_state, "fav")
        assert refused is not None and refused.state == "auth-failed"
        assert refused.next_attempt_at == later and "401" in str(refused.last_error)
        await store.transact(  # what a reload does
            lambda db: db.execute("UPDATE providers SET state = 'online', next_attempt_at = NULL")
        )
        server.faults.update(status=500, body="<html>down</html>", count=1)
        await pull_until(store, loaded, server, 2, "backing-off")
        failed = await store.call(outbox.provider_state, "fav")
        assert failed is not None and failed.state == "backing-off"
        assert "HTTP 500" in str(failed.last_error)
        await pull_until(store, loaded, server, 3, "online")
        working = await store.call(outbox.provider_state, "fav")
        assert working is not None and (working.state, working.last_error) == ("online", None)
