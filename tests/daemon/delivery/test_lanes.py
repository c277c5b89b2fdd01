"""One lane per favourites user (issue 21, part 1), against the emulator on loopback and a real
store: a refused token pauses that user alone, the others are pushed and pulled; a new token
resumes the user at once; the provider is auth-failed only when every user is refused."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.favourites.adapter import FavouritesProvider
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.daemon.cli.resync import _resync
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery.flusher import Flusher
from dropsync.daemon.delivery.providers import ProviderSupervisor
from dropsync.store import outbox
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes

pytestmark = pytest.mark.anyio
TOKENS = {"alice": "tok-alice-1", "bob": "tok-bob-1", "carol": "tok-carol-1"}


def favourite(user: str, item: str, ts: int = 1_700_000_000_000) -> Change:
    raw = orjson.dumps(
        {"user": user, "item": item, "action": "ADD", "actionDate": "2023-11-14T22:13:20.000Z"},
        option=orjson.OPT_SORT_KEYS,
    )
    return Change(
        "favourites",
        f"{user}:{item}",
        raw.decode(),
        ts,
        False,
        "drop",
        hashlib.sha256(raw).hexdigest()[:32],
    )


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(FavouritesEmulator({t: u for u, t in TOKENS.items()})) as running:
        yield running


def emulator_of(server: EmulatorServer) -> FavouritesEmulator:
    assert isinstance(server.emulator, FavouritesEmulator)
    return server.emulator


@pytest.fixture
def config(tmp_path: Path, server: EmulatorServer) -> Config:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "drop": {"path": str(tmp_path / "drop")},
            "providers": {
                "fav": {
                    "kind": "favourites",
                    "base_url": server.base_url,
                    "secret_env": "UNUSED",
                    "backoff_base_s": 0.05,
                    "backoff_cap_s": 0.2,
                    "pull_interval_s": 0.05,
                }
            },
            "collections": {"favourites": {"providers": ["fav"]}},
        },
        "test.toml",
    )


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    async with await Store.open(config.store_path) as opened:
        await opened.transact(outbox.register_providers, [("fav", "favourites")], now=1)
        yield opened


def adapter(server: EmulatorServer, tokens: dict[str, str] | None = None) -> FavouritesProvider:
    return FavouritesProvider(
        "fav", server.base_url, favourite_options({}), dict(tokens or TOKENS), 5, None
    )


async def merge(store: Store, config: Config, changes: list[Change]) -> None:
    await store.transact(
        lambda db: apply_changes(db, changes, config.routes(), now=int(time.time() * 1000))
    )


async def rows(store: Store, sql: str, *params: object) -> list[tuple[Any, ...]]:
    async with store.read() as db:
        return [tuple(r) for r in await db.execute_fetchall(sql, params)]


async def users(store: Store) -> dict[str, tuple[Any, ...]]:
    found = await rows(store, "SELECT user, state, reason, pending FROM provider_users")
    return {row[0]: row[1:] for row in found}


async def provider_state(store: Store) -> str:
    state = await store.call(outbox.provider_state, "fav")
    assert state is not None
    return state.state


async def until(condition: Callable[[], Awaitable[bool]], flusher: Flusher) -> None:
    """Run the flusher until ``condition()``; the timeout only bounds a hang."""
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flusher.run)
            while not await condition():  # noqa: ASYNC110 -- polling the store
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()


async def test_a_refused_user_is_paused_alone_and_the_others_are_delivered(
    server: EmulatorServer, config: Config, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.revoke("carol")
    # carol's item first: today her 401 fails the whole push and stops alice and bob.
    await merge(store, config, [favourite("carol", "s1"), favourite("alice", "s1")])
    await merge(store, config, [favourite("bob", "s1")])
    async with adapter(server) as provider:
        flusher = Flusher(store, config.providers["fav"], provider)

        async def only_carol_waits() -> bool:
            return await rows(store, "SELECT key, held_lane FROM outbox") == [("carol:s1", "carol")]

        await until(only_carol_waits, flusher)
        assert set(emulator.items) == {"alice", "bob"}
        assert await provider_state(store) == "online"
        carol = (await users(store))["carol"]
        assert carol[0] == "auth-failed" and "401" in carol[1] and carol[2] == 1
        assert emulator.calls_of(None, "POST", 401) == 1

        # More for alice and carol: alice's go at once, carol's are not tried again.
        await merge(store, config, [favourite("carol", "s2"), favourite("alice", "s2")])

        async def alice_has_s2() -> bool:
            return "s2" in emulator.items.get("alice", {})

        await until(alice_has_s2, flusher)
        await until(lambda: _held(store, 2), flusher)
        assert emulator.calls_of(None, "POST", 401) == 1
        assert (await users(store))["carol"][2] == 2
        failed = await rows(store, "SELECT state, error FROM deliveries WHERE state = 'failed'")
        assert len(failed) == 1 and "401" in failed[0][1]

        # carol signs in again: her new token is used at once, both items go.
        emulator.set_token("carol", "tok-carol-2")
        update = provider.reload_credentials(
            orjson.dumps({**TOKENS, "carol": "tok-carol-2"}).decode(), secret_read=True
        )
        assert update.changed == {"carol"} and not update.gone
        await flusher.lanes.credentials(provider.lanes(), update.changed, update.gone)

        async def nothing_pending() -> bool:
            return await rows(store, "SELECT COUNT(*) FROM outbox") == [(0,)]

        await until(nothing_pending, flusher)
    assert set(emulator.items["carol"]) == {"s1", "s2"}
    assert (await users(store))["carol"][:3] == ("active", None, 0)


async def _held(store: Store, count: int) -> bool:
    found = await rows(store, "SELECT COUNT(*) FROM outbox WHERE held_lane = 'carol'")
    return found == [(count,)]


async def test_the_provider_is_auth_failed_only_when_every_user_is_refused(
    server: EmulatorServer, config: Config, store: Store
) -> None:
    emulator = emulator_of(server)
    for user in ("alice", "bob"):
        emulator.revoke(user, status=403)
    two = {u: t for u, t in TOKENS.items() if u != "carol"}
    await merge(store, config, [favourite("alice", "s1"), favourite("bob", "s1")])
    async with adapter(server, two) as provider:
        flusher = Flusher(store, config.providers["fav"], provider)

        async def refused() -> bool:
            return await provider_state(store) == "auth-failed"

        await until(refused, flusher)
        assert {u: r[0] for u, r in (await users(store)).items()} == {
            "alice": "auth-failed",
            "bob": "auth-failed",
        }
        state = await store.call(outbox.provider_state, "fav")
        assert state is not None and "403" in str(state.last_error)
        assert await rows(store, "SELECT COUNT(*) FROM outbox") == [(2,)]

        # bob's new token: the provider works again, bob's item goes; alice's waits.
        emulator.set_token("bob", "tok-bob-2")
        update = provider.reload_credentials(
            orjson.dumps({**two, "bob": "tok-bob-2"}).decode(), secret_read=True
        )
        assert await flusher.lanes.credentials(provider.lanes(), update.changed, update.gone)
        flusher.health.store_changed()

        async def bob_delivered() -> bool:
            return await rows(store, "SELECT key FROM outbox") == [("alice:s1",)]

        await until(bob_delivered, flusher)
        assert await provider_state(store) == "online"
    assert "s1" in emulator.items["bob"] and "alice" not in emulator.items


async def test_pulls_go_on_for_the_others_and_a_refused_user_is_not_asked_again(
    server: EmulatorServer, config: Config, store: Store
) -> None:
    emulator = emulator_of(server)
    for user in TOKENS:
        emulator.seed(
            user, [{"item": "p1", "action": "ADD", "actionDate": "2024-01-01T00:00:00.000Z"}]
        )
    emulator.revoke("carol")
    supervisor = ProviderSupervisor(store, config)
    async with adapter(server) as provider:
        for _ in range(3):
            assert await supervisor.pull_lanes(config.providers["fav"], provider) == 2
    keys = await rows(store, "SELECT key FROM records ORDER BY key")
    assert keys == [("alice:p1",), ("bob:p1",)]
    assert emulator.calls_of("alice", "GET") == 3 and emulator.calls_of("bob", "GET") == 3
    assert emulator.calls_of(None, "GET", 401) == 1  # carol: once, then she waits
    assert (await users(store))["carol"][0] == "auth-failed"
    assert await provider_state(store) == "online"


async def test_a_user_without_a_token_waits_and_is_never_dead_lettered(
    server: EmulatorServer, config: Config, store: Store, tmp_path: Path
) -> None:
    emulator = emulator_of(server)
    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "alice").write_text("tok-alice-1\n")
    await merge(store, config, [favourite("dave", "s1"), favourite("alice", "s1")])
    options = favourite_options({"tokens_dir": str(folder)})
    async with FavouritesProvider("fav", server.base_url, options, {}, 5, None) as provider:
        assert provider.lanes() == ("alice",)
        flusher = Flusher(store, config.providers["fav"], provider)

        async def dave_waits() -> bool:
            return await rows(store, "SELECT key, held_lane FROM outbox") == [("dave:s1", "dave")]

        await until(dave_waits, flusher)
        assert (await users(store))["dave"] == ("no-token", None, 1)
        assert await rows(store, "SELECT COUNT(*) FROM dead_letters") == [(0,)]

        emulator.set_token("dave", "tok-dave-1")
        (folder / ".dave.tmp").write_text("tok-dave-1")
        (folder / ".dave.tmp").rename(folder / "dave")
        update = provider.reload_credentials(None, secret_read=False, paths=[folder / "dave"])
        assert update.changed == {"dave"}
        await flusher.lanes.credentials(provider.lanes(), update.changed, update.gone)

        async def delivered() -> bool:
            return await rows(store, "SELECT COUNT(*) FROM outbox") == [(0,)]

        await until(delivered, flusher)
        assert "s1" in emulator.items["dave"]

        # dave's token removed: he is not pulled any more, and his next item waits.
        (folder / "dave").unlink()
        update = provider.reload_credentials(None, secret_read=False)
        assert update.gone == {"dave"}
        await flusher.lanes.credentials(provider.lanes(), update.changed, update.gone)
        assert provider.pull_lanes() == ("alice",)
        await merge(store, config, [favourite("dave", "s2", ts=1_700_000_000_001)])
        await until(lambda: _waits(store, "dave:s2"), flusher)
        assert (await users(store))["dave"][0] == "no-token"


async def _waits(store: Store, key: str) -> bool:
    return await rows(store, "SELECT key, held_lane FROM outbox") == [(key, key.partition(":")[0])]


async def test_after_a_restart_a_refused_user_gets_one_attempt_per_flow(
    server: EmulatorServer, config: Config, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.revoke("carol")
    await merge(store, config, [favourite("carol", "s1")])
    async with adapter(server) as provider:
        await until(lambda: _held(store, 1), Flusher(store, config.providers["fav"], provider))
    assert emulator.calls_of(None, "POST", 401) == 1
    for restart in (1, 2):
        # A restart (or a reload): the supervisor starts the provider's lanes again.
        supervisor = ProviderSupervisor(store, config)
        health = supervisor.health_of(config.providers["fav"])
        async with adapter(server) as provider:
            await health.lanes.start(provider.lanes())
            flusher = Flusher(store, config.providers["fav"], provider, health=health)

            async def tried_again(restart: int = restart) -> bool:
                refused = emulator.calls_of(None, "POST", 401) == 1 + restart
                return refused and await _held(store, 1)

            await until(tried_again, flusher)
            for _ in range(2):
                await supervisor.pull_lanes(config.providers["fav"], provider)
            assert await flusher.flush_once() is False  # nothing more is tried
        assert emulator.calls_of(None, "POST", 401) == 1 + restart
        assert emulator.calls_of(None, "GET", 401) == restart


async def test_resync_tries_every_refused_user_again(
    server: EmulatorServer, config: Config, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.revoke("carol")
    await merge(store, config, [favourite("carol", "s1")])
    async with adapter(server) as provider:
        flusher = Flusher(store, config.providers["fav"], provider)
        await until(lambda: _held(store, 1), flusher)
        emulator.set_token("carol", TOKENS["carol"])  # the provider accepts her token again
        await store.transact(_resync, [("fav", "favourites")], "fav", [], int(time.time() * 1000))
        flusher.health.store_changed()  # the running daemon sees another program's commit

        async def delivered() -> bool:
            return await rows(store, "SELECT COUNT(*) FROM outbox") == [(0,)]

        await until(delivered, flusher)
    assert (await users(store))["carol"][0] == "active"
