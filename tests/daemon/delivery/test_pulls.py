"""Stream pulls into a real store from the registrations emulator: cursors per resource,
incremental pulls, remove-outdated (and when it must not run), master sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from dropsync.adapters.base import PullStream, StreamPage
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import ProviderUnavailable
from dropsync.adapters.options import OptionError
from dropsync.adapters.registrations.adapter import RegistrationsProvider, build, parse_options
from dropsync.adapters.registrations.emulator import RegistrationsEmulator
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery.pulls import StreamPull
from dropsync.store import cursors
from dropsync.store.handle import Store
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio
PASSWORD = "pull-test-password"


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(RegistrationsEmulator(password=PASSWORD)) as running:
        yield running


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "s.db")
    yield opened
    await opened.close()


def emulator_of(server: EmulatorServer) -> RegistrationsEmulator:
    assert isinstance(server.emulator, RegistrationsEmulator)
    return server.emulator


def make_config(server: EmulatorServer, **options: Any) -> Config:
    return parse_config(
        {
            "providers": {
                "lenos": {
                    "kind": "registrations",
                    "base_url": server.base_url,
                    "username": "fp-bot",
                    "event_id": "ev-2026",
                    "secret_env": "UNUSED",
                    **options,
                }
            }
        },
        "<test>",
    )


class Puller:
    """One provider and its StreamPull, as the daemon runs them."""

    def __init__(self, server: EmulatorServer, store: Store, **options: Any) -> None:
        self.config = make_config(server, **options)
        provider_config = self.config.providers["lenos"]
        self.provider: RegistrationsProvider = build(
            "lenos", server.base_url, provider_config.options, PASSWORD, 5.0, None
        )
        self.pull = StreamPull(store, self.config, provider_config, self.provider, lambda r: None)

    async def run(self, only: str | None = None) -> int:
        if only is None:
            return await self.pull.run()
        stream = next(s for s in self.provider.pull_streams() if s.name == only)
        return await self.pull.pull_stream(stream)


async def live(store: Store, collection: str) -> dict[str, dict[str, Any]]:
    async with store.read() as db:
        rows = await db.execute_fetchall(
            "SELECT key, body FROM records WHERE collection = ? AND deleted = 0", (collection,)
        )
    return {key: orjson.loads(body) for key, body in rows}


async def tombstones(store: Store, collection: str) -> set[str]:
    async with store.read() as db:
        rows = await db.execute_fetchall(
            "SELECT key FROM records WHERE collection = ? AND deleted = 1", (collection,)
        )
    return {row[0] for row in rows}


def listed(server: EmulatorServer, resource: str) -> list[str]:
    return [a.path for a in emulator_of(server).requests(f"/api/v1/events/ev-2026/{resource}")]


async def test_first_pull_is_full_the_second_incremental_and_a_change_arrives(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=40, sessions=3)
    emulator.put("locations", [{"id": "l1", "name": "Hall"}])
    emulator.put("sessionTags", [{"id": "t1", "name": "Keynote"}])
    puller = Puller(server, store)
    async with puller.provider:
        assert await puller.run() == 45
        assert len(await live(store, "participants")) == 40
        assert set(await live(store, "session_tags")) == {"t1"}
        for stream in ("participants", "sessions", "registrations", "locations", "sessionTags"):
            stored = await store.call(cursors.get_cursor, "lenos", stream)
            assert (stored is None) == (stream == "registrations")  # nothing listed, no cursor
        participants_cursor = await store.call(cursors.get_cursor, "lenos", "participants")

        # Nothing changed: the second pull sends the cursors and changes nothing.
        emulator.arrivals.clear()
        assert await puller.run() == 0
        sent = [a for a in emulator.requests("/api/v1/events") if a.method == "GET"]
        assert len(sent) == 5

        emulator.put("participants", [{"id": "p7", "RegistrationStatus": "Cancelled"}])
        assert await puller.run() == 1
    assert (await live(store, "participants"))["p7"]["fp_status"] == "cancelled"
    latest = await store.call(cursors.get_cursor, "lenos", "participants")
    assert latest is not None and participants_cursor is not None
    assert latest > participants_cursor


async def test_the_cursor_is_sent_on_the_wire(server: EmulatorServer, store: Store) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=2)
    puller = Puller(server, store)
    async with puller.provider:
        await puller.run("participants")
        await puller.run("participants")
    first, second = (query for resource, query in emulator.listings)
    assert "utcModifiedDate" not in first and first["pageSize"] == "500"
    cursor = await store.call(cursors.get_cursor, "lenos", "participants")
    assert cursor is not None and second["utcModifiedDate"] == cursor


async def test_1234_participants_at_page_size_500(server: EmulatorServer, store: Store) -> None:
    emulator_of(server).seed(participants=1234)
    puller = Puller(server, store)
    async with puller.provider:
        await puller.run("participants")
    assert len(await live(store, "participants")) == 1234
    assert len(listed(server, "participants")) == 3


async def test_full_pull_removes_exactly_the_two_dropped_participants(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=1234)
    puller = Puller(server, store, remove_outdated=["participants"], incremental=False)
    async with puller.provider:
        await puller.run("participants")
        emulator.remove("participants", "p5")
        emulator.remove("participants", "p1000")
        with capture_logs() as logs:
            await puller.run("participants")
    assert await tombstones(store, "participants") == {"p5", "p1000"}
    assert len(await live(store, "participants")) == 1232
    assert [e["removed"] for e in logs if e["event"] == "outdated_removed"] == [2]


async def test_resync_then_full_pull_removes_and_local_records_stay(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=10)
    puller = Puller(server, store, remove_outdated=["participants"])
    async with puller.provider:
        await puller.run("participants")
        # A participant a local program created: never the provider's to remove.
        await store.transact(
            lambda db: db.execute(
                "INSERT INTO inbox (collection, key, op, body, updated_at) VALUES "
                "('participants', 'local-1', 'upsert', '{}', 1700000000000)"
            )
        )
        from dropsync.daemon.ingest.inbox import InboxApplier

        await InboxApplier(store, puller.config, lambda r: None).apply_pending()
        emulator.remove("participants", "p2")
        await store.call(cursors.reset_cursors, "lenos")  # what `dropsync resync` does
        await puller.run("participants")
    assert await tombstones(store, "participants") == {"p2"}
    assert "local-1" in await live(store, "participants")


async def back_date(store: Store, finished: int) -> None:
    """Mark the last complete full pull of participants as having ended at ``finished``."""
    await store.transact(
        lambda db: cursors.full_pull_done(db, "lenos", "participants", now=finished)
    )


def full_listings(server: EmulatorServer, resource: str) -> list[bool]:
    """For each listing request of ``resource``'s first page: True when it was a full read."""
    return [
        "utcModifiedDate" not in query
        for name, query in emulator_of(server).listings
        if name == resource and query.get("page") == "1"
    ]


async def test_a_participant_deleted_at_the_provider_is_removed_at_the_next_pull(
    server: EmulatorServer, store: Store
) -> None:
    # The document: "Upon next sync, the items deleted on the client's side will be
    # removed". Incremental pulls are on (the default): the stream with remove_outdated
    # is read in full each pull, the others stay incremental.
    emulator = emulator_of(server)
    emulator.seed(participants=20, sessions=2)
    puller = Puller(server, store, remove_outdated=["participants"])
    async with puller.provider:
        await puller.run()
        emulator.remove("participants", "p3")
        emulator.put("participants", [{"id": "p4", "RegistrationStatus": "Cancelled"}])
        emulator.remove("sessions", "s1")
        with capture_logs() as logs:
            await puller.run()
    assert await tombstones(store, "participants") == {"p3"}
    assert (await live(store, "participants"))["p4"]["fp_status"] == "cancelled"
    assert [e["removed"] for e in logs if e["event"] == "outdated_removed"] == [1]
    assert full_listings(server, "participants") == [True, True]
    assert full_listings(server, "sessions") == [True, False]  # no remove_outdated: incremental
    assert await tombstones(store, "sessions") == set()
    assert await store.call(cursors.last_full_pull, "lenos", "participants") is not None
    assert await store.call(cursors.last_full_pull, "lenos", "sessions") is None


async def test_with_full_pull_interval_incremental_pulls_do_not_remove_until_a_full_is_due(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=20)
    puller = Puller(server, store, remove_outdated=["participants"], full_pull_interval_s=3600)
    async with puller.provider:
        await puller.run("participants")  # the first pull is full
        finished = await store.call(cursors.last_full_pull, "lenos", "participants")
        assert finished is not None
        emulator.remove("participants", "p3")
        emulator.put("participants", [{"id": "p4", "RegistrationStatus": "Cancelled"}])
        await puller.run("participants")
        await puller.run("participants")
        assert full_listings(server, "participants") == [True, False, False]
        assert await tombstones(store, "participants") == set()  # incremental: p3 not listed
        assert (await live(store, "participants"))["p4"]["fp_status"] == "cancelled"
        # An hour later (the mark moved back an hour): the next pull is full and removes.
        await back_date(store, finished - 3_600_000)
        await puller.run("participants")
        assert full_listings(server, "participants")[-1] is True
        assert await tombstones(store, "participants") == {"p3"}
        # ... and the removal is not due again for an hour.
        await puller.run("participants")
    assert full_listings(server, "participants")[-1] is False


async def test_a_removal_mark_ahead_of_the_clock_does_not_put_removals_off(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=5)
    puller = Puller(server, store, remove_outdated=["participants"], full_pull_interval_s=3600)
    async with puller.provider:
        await puller.run("participants")
        finished = await store.call(cursors.last_full_pull, "lenos", "participants")
        assert finished is not None
        # The clock was a year ahead when the mark was written, and was then set right.
        await back_date(store, finished + 365 * 86_400_000)
        emulator.remove("participants", "p2")
        await puller.run("participants")
    assert await tombstones(store, "participants") == {"p2"}


async def test_an_unsettled_full_pull_removes_nothing_and_the_removal_stays_due(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=20)
    puller = Puller(server, store, remove_outdated=["participants"], full_pull_interval_s=3600)
    async with puller.provider:
        await puller.run("participants")
        finished = await store.call(cursors.last_full_pull, "lenos", "participants")
        assert finished is not None
        await back_date(store, finished - 3_600_000)
        emulator.remove("participants", "p3")
        # An item without a readable date: the pull is not settled while it is listed.
        emulator.put("participants", [{"id": "odd", "utcModifiedDate": "not a date"}])
        with capture_logs() as logs:
            await puller.run("participants")
            await puller.run("participants")
        assert [e["event"] for e in logs if e["event"] == "pull_unsettled"] == [
            "pull_unsettled"
        ] * 2
        assert full_listings(server, "participants") == [True, True, True]  # still due
        assert await tombstones(store, "participants") == set()
        assert await store.call(cursors.last_full_pull, "lenos", "participants") == (
            finished - 3_600_000
        )
        emulator.remove("participants", "odd")
        await puller.run("participants")
    assert await tombstones(store, "participants") == {"p3"}


async def test_full_pull_interval_is_checked(server: EmulatorServer) -> None:
    for value in (-1, "1h", True, 31 * 86400):
        with pytest.raises(OptionError) as refused:
            parse_options({"username": "u", "event_id": "e", "full_pull_interval_s": value})
        assert refused.value.key == "full_pull_interval_s"
    parsed = parse_options({"username": "u", "event_id": "e", "full_pull_interval_s": 0.5})
    assert parsed.full_pull_interval_s == 0.5


async def test_full_pull_cut_off_mid_pages_removes_nothing_and_keeps_the_cursor(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=1234)
    puller = Puller(server, store, remove_outdated=["participants"], incremental=False)
    async with puller.provider:
        await puller.run("participants")
        before = await store.call(cursors.get_cursor, "lenos", "participants")
        emulator.remove("participants", "p1")
        emulator.put("participants", [{"id": "p1234", "RegistrationStatus": "Cancelled"}])
        original = puller.provider.stream_pages

        async def cut_after_two(stream: PullStream, since: str | None) -> AsyncIterator[StreamPage]:
            count = 0
            async for page in original(stream, since):
                count += 1
                if count == 3:
                    raise ProviderUnavailable("connection reset")
                yield page

        puller.provider.stream_pages = cut_after_two  # type: ignore[method-assign]
        with pytest.raises(ProviderUnavailable):
            await puller.run("participants")
    assert await tombstones(store, "participants") == set()
    assert await store.call(cursors.get_cursor, "lenos", "participants") == before


async def test_empty_full_listing_removes_nothing(server: EmulatorServer, store: Store) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=5)
    puller = Puller(server, store, remove_outdated=["participants"], incremental=False)
    async with puller.provider:
        await puller.run("participants")
        for n in range(1, 6):
            emulator.remove("participants", f"p{n}")
        with capture_logs() as logs:
            await puller.run("participants")
    assert await tombstones(store, "participants") == set()
    assert any(e["event"] == "outdated_removal_skipped" for e in logs)


async def test_a_moving_listing_keeps_the_cursor_and_removes_nothing(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    emulator.seed(participants=1200)
    puller = Puller(server, store, remove_outdated=["participants"], incremental=False)
    async with puller.provider:
        original = puller.provider.stream_pages

        async def shrinking(stream: PullStream, since: str | None) -> AsyncIterator[StreamPage]:
            async for page in original(stream, since):
                emulator.remove("participants", "p1")  # deleted while being paged
                yield page

        puller.provider.stream_pages = shrinking  # type: ignore[method-assign]
        with capture_logs() as logs:
            await puller.run("participants")
    assert any(e["event"] == "pull_unsettled" for e in logs)
    assert await store.call(cursors.get_cursor, "lenos", "participants") is None
    assert await tombstones(store, "participants") == set()


async def test_master_sessions_appear_and_follow_a_session_out_of_its_slot(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    nine = "2026-06-01T09:00:00Z"
    emulator.put(
        "sessions",
        [
            {"id": "a", "title": "A", "startTime": nine, "in_slot": True},
            {"id": "b", "title": "B", "startTime": nine, "in_slot": True},
            {"id": "c", "title": "C", "startTime": nine, "in_slot": True},
            {"id": "d", "title": "D", "startTime": "2026-06-01T10:00:00Z", "in_slot": True},
        ],
    )
    puller = Puller(server, store, concurrent_sessions_title="Parallel tracks")
    async with puller.provider:
        await puller.run("sessions")
        sessions = await live(store, "sessions")
        master = sessions["master:" + nine]
        assert master["title"] == "Parallel tracks" and master["sessions"] == ["a", "b", "c"]
        assert {k: s.get("master_session") for k, s in sessions.items() if len(k) == 1} == {
            "a": "master:" + nine,
            "b": "master:" + nine,
            "c": "master:" + nine,
            "d": None,
        }

        emulator.put("sessions", [{"id": "c", "title": "C", "startTime": nine, "in_slot": False}])
        await puller.run("sessions")
        sessions = await live(store, "sessions")
        assert sessions["master:" + nine]["sessions"] == ["a", "b"]
        assert "master_session" not in sessions["c"]

        emulator.put("sessions", [{"id": "b", "title": "B", "startTime": nine, "in_slot": False}])
        await puller.run("sessions")
        assert "master:" + nine in await tombstones(store, "sessions")
        assert "master_session" not in (await live(store, "sessions"))["a"]

        # A full pull of unchanged sessions leaves everything as it is.
        await store.call(cursors.reset_cursors, "lenos")
        assert await puller.run("sessions") == 0


async def test_remove_outdated_sessions_spares_master_sessions(
    server: EmulatorServer, store: Store
) -> None:
    emulator = emulator_of(server)
    nine = "2026-06-01T09:00:00Z"
    emulator.put(
        "sessions",
        [
            {"id": "a", "startTime": nine, "in_slot": True},
            {"id": "b", "startTime": nine, "in_slot": True},
            {"id": "z", "startTime": nine, "in_slot": False},
        ],
    )
    puller = Puller(
        server,
        store,
        concurrent_sessions_title="Parallel",
        remove_outdated=["sessions"],
        incremental=False,
    )
    async with puller.provider:
        await puller.run("sessions")
        emulator.remove("sessions", "z")
        await puller.run("sessions")
    assert await tombstones(store, "sessions") == {"z"}
    assert "master:" + nine in await live(store, "sessions")


async def test_a_pulled_integer_of_any_size_keeps_its_digits_in_the_store(
    server: EmulatorServer, store: Store
) -> None:
    emulator_of(server).queue_raw(
        200,
        b'{"items": [{"id": "big", "utcModifiedDate": "2026-01-01T00:00:00.000Z", '
        b'"n": 123456789012345678901234567890}], "total": 1}',
        route="GET /locations",
    )
    puller = Puller(server, store)
    async with puller.provider:
        await puller.run("locations")
    async with store.read() as db:
        rows = await db.execute_fetchall(
            "SELECT body FROM records WHERE collection = 'locations' AND key = 'big'"
        )
    assert [r[0] for r in rows] == [
        '{"id":"big","n":123456789012345678901234567890,"utcModifiedDate":"2026-01-01T00:00:00.000Z"}'
    ]
