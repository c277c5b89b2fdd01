"""The registrations adapter against its emulator over loopback: login, pages, cursors,
token expiry, requests, and every odd answer a provider can give."""

from __future__ import annotations

from typing import Any

import pytest
from dropsync.adapters.base import (
    IncomingChange,
    OutgoingChange,
    PullStream,
    StreamPage,
    StreamPuller,
    change_idempotency_key,
)
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import (
    AuthError,
    ProviderError,
    ProviderMisconfigured,
    RetryableError,
    UnexpectedAnswer,
)
from dropsync.adapters.http import HttpAdapter
from dropsync.adapters.options import OptionError
from dropsync.adapters.registrations import REQUESTS
from dropsync.adapters.registrations.adapter import (
    CURSOR_OVERLAP_MS,
    RegistrationsProvider,
    build,
    parse_options,
    safe_cursor,
)
from dropsync.adapters.registrations.data import (
    format_modified,
    load_json,
    master_sessions,
    parse_modified,
)
from dropsync.adapters.registrations.emulator import RegistrationsEmulator
from dropsync.adapters.registry import build_provider
from dropsync.daemon.config import ProviderConfig

from tests.adapters.conftest import REGISTRATIONS_PASSWORD

pytestmark = pytest.mark.anyio
BASE = {"username": "fp-bot", "event_id": "ev-2026"}


def emulator_of(server: EmulatorServer) -> RegistrationsEmulator:
    emulator = server.emulator
    assert isinstance(emulator, RegistrationsEmulator)
    return emulator


def provider(server: EmulatorServer, **options: Any) -> RegistrationsProvider:
    return build("lenos", server.base_url, {**BASE, **options}, REGISTRATIONS_PASSWORD, 5.0, None)


def stream(p: RegistrationsProvider, name: str) -> PullStream:
    return next(s for s in p.pull_streams() if s.name == name)


async def pages(p: RegistrationsProvider, name: str, since: str | None = None) -> list[StreamPage]:
    return [page async for page in p.stream_pages(stream(p, name), since)]


def request_change(entry_id: int, body: dict[str, Any] | None, key: str = "q1") -> OutgoingChange:
    return OutgoingChange(
        entry_id,
        REQUESTS,
        key,
        1_700_000_000_000 + entry_id,
        body is None,
        body,
        change_idempotency_key("lenos", REQUESTS, key, 1_700_000_000_000 + entry_id),
    )


# ----- options --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["username", "event_id"])
def test_missing_required_option_names_the_key(missing: str) -> None:
    options = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(OptionError) as caught:
        parse_options(options)
    assert caught.value.key == missing


def test_missing_password_is_refused() -> None:
    with pytest.raises(OptionError) as caught:
        build("lenos", "http://127.0.0.1:9", BASE, None, 5.0, None)
    assert caught.value.key == "secret_env"


@pytest.mark.parametrize(
    "options",
    [
        {"fp_status": "RegistrationStatus"},
        {"fp_ext_id": "email"},
        {"mapping": {"participants": {"fp_status": "status"}}},
        {"mapping": {"participants": {"RegistrationStatus": "fp_status"}}},
    ],
)
def test_the_fixed_mapping_cannot_be_overridden(options: dict[str, Any]) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options({**BASE, **options})
    assert "fp_" in str(caught.value) or "mapping" in caught.value.key


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"paths": {"participants": "no-slash"}}, "paths.participants"),
        ({"paths": {"cancel": "/registrations"}}, "paths.cancel"),
        ({"paths": {"login": "/x/{secret}"}}, "paths.login"),
        ({"paths": {"nonsense": "/x"}}, "paths.nonsense"),
        ({"remove_outdated": ["people"]}, "remove_outdated"),
        ({"page_size": 0}, "page_size"),
        ({"collection_prefix": "a/b"}, "collection_prefix"),
        ({"typo": 1}, "typo"),
    ],
)
def test_bad_options_name_their_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options({**BASE, **options})
    assert caught.value.key == key


def test_request_collection_of_config_matches_the_adapter() -> None:
    config = ProviderConfig(
        "lenos", "registrations", "http://x", options={"collection_prefix": "e_"}
    )
    assert config.request_collections() == ("e_" + REQUESTS,)


def test_the_adapter_is_a_stream_puller(registrations_server: EmulatorServer) -> None:
    assert isinstance(provider(registrations_server), StreamPuller)


# ----- pulls ----------------------------------------------------------------------------


async def test_1234_participants_arrive_complete_in_pages_of_500(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    emulator.seed(participants=1234)
    async with provider(registrations_server) as p:
        got = await pages(p, "participants")
    assert [len(page.changes) for page in got] == [500, 500, 234]
    assert [page.last for page in got] == [False, False, True]
    assert got[-1].settled and got[-1].full
    keys = {c.key for page in got for c in page.changes}
    assert len(keys) == 1234
    first = got[0].changes[0]
    assert first.collection == "participants"
    assert first.body is not None
    assert first.body["fp_ext_id"] == first.key and first.body["fp_status"] == "active"
    listed = [a for a in emulator.requests("/api/v1/events") if a.method == "GET"]
    assert len(listed) == 3


async def test_participant_status_rule_and_prefix(registrations_server: EmulatorServer) -> None:
    emulator_of(registrations_server).put(
        "participants",
        [
            {"id": 7, "RegistrationStatus": "Registered", "fp_status": "nonsense"},
            {"id": "x", "RegistrationStatus": "Cancelled"},
            {"id": "y"},
        ],
    )
    async with provider(registrations_server, collection_prefix="ev2026_") as p:
        got = await pages(p, "participants")
    bodies = {c.key: c.body for c in got[0].changes}
    assert {k: b["fp_status"] for k, b in bodies.items() if b} == {
        "7": "active",
        "x": "cancelled",
        "y": "cancelled",
    }
    assert bodies["7"] is not None and bodies["7"]["fp_ext_id"] == "7"
    assert got[0].changes[0].collection == "ev2026_participants"


async def test_incremental_pull_sends_the_cursor_and_gets_only_what_changed(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    emulator.seed(participants=30)
    async with provider(registrations_server) as p:
        first = await pages(p, "participants")
        cursor = first[-1].cursor
        assert cursor is not None and cursor.endswith("Z")
        emulator.put("participants", [{"id": "p3", "RegistrationStatus": "Cancelled"}])
        second = await pages(p, "participants", cursor)
    # The cursor is inclusive: the item at its very moment (p30, the newest) comes again
    # and merges as a duplicate; of the rest, only the changed p3.
    assert [c.key for page in second for c in page.changes] == ["p3", "p30"]
    assert not second[-1].full and second[-1].settled
    assert second[-1].cursor is not None and second[-1].cursor > cursor
    sent = [a for a in emulator.requests("/api/v1/events") if a.method == "GET"]
    assert len(sent) == 2


async def test_incremental_false_always_pulls_everything(
    registrations_server: EmulatorServer,
) -> None:
    emulator_of(registrations_server).seed(participants=3)
    async with provider(registrations_server, incremental=False) as p:
        got = await pages(p, "participants", "2030-01-01T00:00:00.000Z")
    assert len(got[-1].changes) == 3 and got[-1].full


async def test_token_expiring_mid_pull_logs_in_again_and_completes(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    emulator.seed(participants=1234)
    emulator.ttl_requests = 1  # every token is good for one data request
    async with provider(registrations_server) as p:
        got = await pages(p, "participants")
    assert sum(len(page.changes) for page in got) == 1234 and got[-1].settled
    assert emulator.logins == 3


async def test_refused_login_is_an_auth_error_without_the_password(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    emulator.queue_raw(401, b'{"reason": "bad credentials", "echo": {body}}')
    async with provider(registrations_server) as p:
        with pytest.raises(AuthError) as caught:
            await pages(p, "participants")
    assert REGISTRATIONS_PASSWORD not in str(caught.value)
    assert "[redacted]" in str(caught.value)


async def test_wrong_password_is_an_auth_error(registrations_server: EmulatorServer) -> None:
    p = build("lenos", registrations_server.base_url, BASE, "not-the-password", 5.0, None)
    async with p:
        with pytest.raises(AuthError):
            await pages(p, "sessions")


async def test_a_token_echoed_in_an_error_is_removed(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "sessions")  # logged in
        token = p._token
        assert token is not None
        emulator.queue_raw(500, b"upstream failed for {authorization}")
        with pytest.raises(RetryableError) as caught:
            await pages(p, "sessions")
    assert token not in str(caught.value) and "[redacted]" in str(caught.value)


def test_the_provider_speaks_through_the_common_boundary(
    registrations_server: EmulatorServer,
) -> None:
    assert isinstance(provider(registrations_server), HttpAdapter)


async def test_another_secret_of_the_provider_echoed_is_never_said(
    registrations_server: EmulatorServer,
) -> None:
    """A secret the daemon hands over (``build_provider(also_secret=...)``), echoed by the
    provider in an error and in a refusal's reason, as for every kind."""
    other = "other-secret-5e1f"
    p = build_provider(
        name="lenos",
        kind="registrations",
        base_url=registrations_server.base_url,
        options=BASE,
        secret=REGISTRATIONS_PASSWORD,
        timeout_s=5,
        batch_max_items=None,
        also_secret=[other],
    )
    assert isinstance(p, RegistrationsProvider)
    emulator = seeded(registrations_server)
    async with p:
        await pages(p, "locations")  # logged in
        emulator.queue_raw(500, f"upstream said {other}".encode(), route="GET /sessions")
        with pytest.raises(RetryableError) as caught:
            await pages(p, "sessions")
        emulator.queue_raw(
            409, f'{{"reason": "no, {other}"}}'.encode(), route="POST /registrations"
        )
        result = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1"})], idempotency_key="x"
        )
    assert other not in str(caught.value) and "[redacted]" in str(caught.value)
    assert result.outcomes[0].reason == "no, [redacted]"


@pytest.mark.parametrize(
    ("status", "body", "headers", "words"),
    [
        (200, b"<html>maintenance</html>", {}, "expected {items, total}"),
        (200, b"{}", {}, "items"),
        (200, b'{"items": [], "total": true}', {}, "total"),
        (200, b"\xff\xfe not utf-8", {}, "not JSON"),
        (200, b"[" * 100_000, {}, "not JSON"),
        (302, b"", {"Location": "https://elsewhere.example/login"}, "redirect"),
        (408, b"timeout", {}, "408"),
        (503, b"busy", {"Retry-After": "99999999999999999999"}, "503"),
    ],
)
async def test_odd_page_answers_keep_everything_and_say_why(
    registrations_server: EmulatorServer,
    status: int,
    body: bytes,
    headers: dict[str, str],
    words: str,
) -> None:
    emulator = emulator_of(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "sessions")
        emulator.queue_raw(status, body, headers)
        with pytest.raises(RetryableError) as caught:
            await pages(p, "sessions")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "login",
    [
        b'{"token": "abc\\ndef-ghij", "expiresIn": 60}',
        b'{"token": "", "expiresIn": 60}',
        b'{"token": "good-token-1", "expiresIn": "soon"}',
        b'{"token": "good-token-1", "expiresIn": 1e400}',
        b"<html>login</html>",
    ],
)
async def test_odd_login_answers_are_retryable(
    registrations_server: EmulatorServer, login: bytes
) -> None:
    emulator_of(registrations_server).queue_raw(200, login)
    async with provider(registrations_server) as p:
        with pytest.raises(UnexpectedAnswer) as caught:
            await pages(p, "sessions")
    assert "expected 200 {token, expiresIn}" in str(caught.value)
    assert "good-token-1" not in str(caught.value) and "def-ghij" not in str(caught.value)


async def test_big_integers_keep_their_digits_and_unrepresentable_numbers_skip_the_item(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "sessions")
        emulator.queue_raw(
            200,
            b'{"items": [{"id": "a", "utcModifiedDate": "2026-01-01T00:00:00.000Z", '
            b'"n": 123456789012345678901234567890}, {"id": "b", "utcModifiedDate": '
            b'"2026-01-01T00:00:00.000Z", "n": 1e400}], "total": 2}',
        )
        got = await pages(p, "sessions")
    assert [c.key for c in got[0].changes] == ["a"]
    body = got[0].changes[0].body
    assert body is not None and body["n"] == 123456789012345678901234567890
    assert not got[-1].settled  # an item was skipped: no cursor move, no removal


async def test_a_listing_that_moves_while_paged_is_not_settled(
    registrations_server: EmulatorServer,
) -> None:
    emulator = emulator_of(registrations_server)
    emulator.seed(participants=600)
    async with provider(registrations_server) as p:
        seen: list[StreamPage] = []
        async for page in p.stream_pages(stream(p, "participants"), None):
            seen.append(page)
            if len(seen) == 1:
                emulator.remove("participants", "p1")  # total drops to 599 mid-pull
    assert seen[-1].last and not seen[-1].settled


async def test_a_change_made_while_an_incremental_pull_pages_is_pulled_the_next_time(
    registrations_server: EmulatorServer,
) -> None:
    # The cursor was the newest utcModifiedDate read. p2, on the first page, changed after
    # that page was read; p28, on the last page, changed after p2: its date was read, the
    # cursor moved past p2's new one, and p2's change was never pulled (the listing held
    # still: the pull counted as settled). Once in a CI run of the kinds campaign.
    emulator = emulator_of(registrations_server)
    emulator.seed(participants=30)
    async with provider(registrations_server, page_size=10) as p:
        cursor = (await pages(p, "participants"))[-1].cursor
        emulator.put(
            "participants", [{"id": f"p{n}", "firstName": "Changed"} for n in range(1, 31)]
        )
        seen: list[StreamPage] = []
        async for page in p.stream_pages(stream(p, "participants"), cursor):
            seen.append(page)
            if len(seen) == 1:
                emulator.put("participants", [{"id": "p2", "firstName": "Later"}])
                emulator.put("participants", [{"id": "p28", "firstName": "Latest"}])
        assert len(seen) == 3 and seen[-1].settled
        again = await pages(p, "participants", seen[-1].cursor)
    bodies = {c.key: c.body for page in again for c in page.changes}
    assert bodies["p2"] is not None and bodies["p2"]["firstName"] == "Later"


def test_a_pull_of_several_pages_ends_at_its_first_page_or_its_start_less_the_overlap() -> None:
    start = 1_800_000_000_000
    floor = start - CURSOR_OVERLAP_MS
    newest = (start + 5, format_modified(start + 5))
    recent_first = (start - 10, format_modified(start - 10))
    old_first = (start - 86_400_000, format_modified(start - 86_400_000))
    assert safe_cursor(newest, recent_first, 1, start) == newest  # one page: all of it
    assert safe_cursor(newest, recent_first, 3, start) == recent_first
    # A first page of old items says little: the pull's start less the overlap, then.
    assert safe_cursor(newest, old_first, 3, start) == (floor, format_modified(floor))
    assert parse_modified(format_modified(floor)) == floor
    older = (floor - 1, format_modified(floor - 1))  # nothing read after the floor
    assert safe_cursor(older, old_first, 3, start) == older


async def test_a_provider_repeating_one_page_is_not_settled(
    registrations_server: EmulatorServer,
) -> None:
    page = b'{"items": [{"id": "a", "utcModifiedDate": "2026-01-01T00:00:00Z"}], "total": 2}'
    emulator = emulator_of(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "sessions")
        emulator.queue_raw(200, page)
        emulator.queue_raw(200, page)
        got = await pages(p, "sessions")
    assert got[-1].last and not got[-1].settled


# ----- 2-way registration ---------------------------------------------------------------


def seeded(server: EmulatorServer) -> RegistrationsEmulator:
    emulator = emulator_of(server)
    emulator.seed(participants=3, sessions=2)
    emulator.put("sessions", [{"id": "full", "startTime": "2026-06-01T09:00:00Z", "capacity": 0}])
    return emulator


async def test_registration_confirmed_with_the_registration_record(
    registrations_server: EmulatorServer,
) -> None:
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        result = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1", "action": "register"})],
            idempotency_key="k1",
        )
    assert [(o.status, o.remote_ref) for o in result.outcomes] == [("confirmed", "r1")]
    [record] = result.changes
    assert record.collection == "registrations" and record.key == "r1"
    assert record.body == {
        "id": "r1",
        "participantId": "p1",
        "sessionId": "s1",
        "status": "Registered",
    }
    assert len(emulator.registered("p1", "s1")) == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"participantId": "p1", "sessionId": "full"}, "session is full"),
        ({"participantId": "nobody", "sessionId": "s1"}, "unknown participant"),
        ({"participantId": "p1"}, "sessionId is missing"),
        ({"participantId": "p1", "sessionId": "s1", "action": "maybe"}, "action"),
    ],
)
async def test_refusals_carry_the_reason(
    registrations_server: EmulatorServer, body: dict[str, Any], words: str
) -> None:
    seeded(registrations_server)
    async with provider(registrations_server) as p:
        result = await p.push([request_change(1, body)], idempotency_key="k")
    [outcome] = result.outcomes
    assert outcome.status == "refused" and outcome.reason is not None and words in outcome.reason
    assert not result.changes


async def test_registering_twice_is_refused_by_the_provider(
    registrations_server: EmulatorServer,
) -> None:
    seeded(registrations_server)
    body = {"participantId": "p2", "sessionId": "s2"}
    async with provider(registrations_server) as p:
        await p.push([request_change(1, body)], idempotency_key="a")
        again = await p.push([request_change(2, body, key="q2")], idempotency_key="b")
    assert again.outcomes[0].status == "refused"
    assert "already registered" in (again.outcomes[0].reason or "")


async def test_the_same_request_asked_twice_registers_once(
    registrations_server: EmulatorServer,
) -> None:
    emulator = seeded(registrations_server)
    body = {"participantId": "p1", "sessionId": "s2"}
    async with provider(registrations_server) as p:
        one = await p.push([request_change(1, body)], idempotency_key="same")
        two = await p.push([request_change(1, body)], idempotency_key="same")
    assert one.outcomes == two.outcomes
    assert len(emulator.registered("p1", "s2")) == 1


async def test_cancel_finds_the_registration_through_the_lookup(
    registrations_server: EmulatorServer,
) -> None:
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        made = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1"})], idempotency_key="r"
        )
        record = made.changes[0]

        async def lookup(collection: str, fields: Any) -> list[tuple[str, int, Any]]:
            assert collection == "registrations"
            assert fields == {"participantId": "p1", "sessionId": "s1"}
            return [(record.key, record.updated_at, record.body)]

        p.attach_lookup(lookup)
        cancelled = await p.push(
            [request_change(2, {"participantId": "p1", "sessionId": "s1", "action": "cancel"})],
            idempotency_key="c",
        )
    assert cancelled.outcomes[0].status == "confirmed"
    assert cancelled.changes[0].body is not None
    assert cancelled.changes[0].body["status"] == "Cancelled"
    assert cancelled.changes[0].updated_at > record.updated_at
    assert emulator.registered("p1", "s1") == []


async def test_cancel_of_an_unknown_registration_is_refused_locally(
    registrations_server: EmulatorServer,
) -> None:
    async with provider(registrations_server) as p:
        result = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1", "action": "cancel"})],
            idempotency_key="c",
        )
    assert result.outcomes[0].status == "refused"
    assert emulator_of(registrations_server).requests("/api/v1/events") == []


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (201, b"<html>ok</html>", {}),
        (200, b"{}", {}),
        (201, b'{"id": true, "status": "Registered"}', {}),
        (301, b"", {"Location": "/v2/registrations"}),
        (308, b"", {}),
        (408, b"slow", {}),
        (404, b"<html>not found</html>", {}),
        (500, b"echo {authorization} {body}", {}),
    ],
)
async def test_odd_registration_answers_keep_the_request_pending(
    registrations_server: EmulatorServer,
    status: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "locations")  # logged in, so the raw answer meets the registration
        emulator.queue_raw(status, body, headers)
        with pytest.raises(ProviderError) as caught:
            await p.push(
                [request_change(1, {"participantId": "p1", "sessionId": "s1"})],
                idempotency_key="x",
            )
        token = p._token
    assert isinstance(caught.value, RetryableError)
    assert REGISTRATIONS_PASSWORD not in str(caught.value)
    assert token is not None and token not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        # The setup's (a wrong path), not the request's: misconfigured, as for every kind.
        (404, ProviderMisconfigured, "provider misconfigured"),
        (405, ProviderMisconfigured, "provider misconfigured"),
        (410, ProviderMisconfigured, "provider misconfigured"),
        # A proxy's, on the way: never the request's.
        (407, ProviderMisconfigured, "a proxy on the way"),
        # Not the request's either: no refusal without a reason.
        (400, RetryableError, "no reason"),
        (413, RetryableError, "no reason"),
        (418, RetryableError, "no reason"),
    ],
)
async def test_a_request_answered_a_4xx_without_a_reason_stays_pending(
    registrations_server: EmulatorServer, status: int, kind: type[Exception], words: str
) -> None:
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        emulator.queue_raw(status, b"<html>no</html>", route="POST /registrations")
        with pytest.raises(RetryableError) as caught:
            await p.push(
                [request_change(1, {"participantId": "p1", "sessionId": "s1"})],
                idempotency_key="x",
            )
    assert type(caught.value) is kind
    assert words in str(caught.value) and f"HTTP {status}" in str(caught.value)
    assert emulator.registered("p1", "s1") == []


async def test_a_refusal_reason_echoing_the_token_is_redacted(
    registrations_server: EmulatorServer,
) -> None:
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "locations")
        token = p._token
        emulator.queue_raw(409, b'{"reason": "no, {authorization}"}')
        result = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1"})], idempotency_key="x"
        )
    reason = result.outcomes[0].reason or ""
    assert token is not None and token not in reason and "[redacted]" in reason


def test_other_collections_are_refused_by_check(registrations_server: EmulatorServer) -> None:
    p = provider(registrations_server)
    change = request_change(1, {"participantId": "p1", "sessionId": "s1"})
    assert p.check(change) is None
    assert p.check(change._replace(collection="contacts")) is not None


# ----- master sessions ------------------------------------------------------------------


def sessions(*rows: tuple[str, int, dict[str, Any]]) -> list[tuple[str, int, bool, Any]]:
    return [(key, ts, False, body) for key, ts, body in rows]


def apply(
    records: list[tuple[str, int, bool, Any]], changes: list[IncomingChange]
) -> list[tuple[str, int, bool, Any]]:
    current = {key: (key, ts, deleted, body) for key, ts, deleted, body in records}
    for change in changes:
        current[change.key] = (change.key, change.updated_at, change.deleted, change.body)
    return list(current.values())


def test_master_sessions_appear_follow_and_go() -> None:
    nine = "2026-06-01T09:00:00Z"
    records = sessions(
        ("a", 10, {"id": "a", "startTime": nine, "in_slot": True}),
        ("b", 11, {"id": "b", "startTime": nine, "in_slot": True}),
        ("c", 12, {"id": "c", "startTime": nine, "in_slot": False}),
    )
    changes = master_sessions("sessions", records, "Parallel tracks")
    by_key = {c.key: c for c in changes}
    master = by_key["master:" + nine]
    assert master.body == {
        "id": "master:" + nine,
        "title": "Parallel tracks",
        "startTime": nine,
        "sessions": ["a", "b"],
    }
    assert by_key["a"].body is not None and by_key["a"].body["master_session"] == master.key
    assert by_key["a"].updated_at == 11 and "c" not in by_key
    records = apply(records, changes)
    assert master_sessions("sessions", records, "Parallel tracks") == []  # stable

    # b moves out of the slot (a newer version from the provider): the master goes.
    records = apply(
        records,
        [
            IncomingChange(
                "sessions", "b", 50, False, {"id": "b", "startTime": nine, "in_slot": False}
            )
        ],
    )
    changes = master_sessions("sessions", records, "Parallel tracks")
    by_key = {c.key: c for c in changes}
    assert by_key["master:" + nine].deleted
    assert by_key["a"].body is not None and "master_session" not in by_key["a"].body
    records = apply(records, changes)
    assert master_sessions("sessions", records, "Parallel tracks") == []

    # c joins a's slot: a master again, dated after its tombstone.
    records = apply(
        records,
        [
            IncomingChange(
                "sessions", "c", 60, False, {"id": "c", "startTime": nine, "in_slot": True}
            )
        ],
    )
    changes = master_sessions("sessions", records, "Parallel tracks")
    again = next(c for c in changes if c.key == "master:" + nine)
    tombstone = next(r for r in records if r[0] == "master:" + nine)
    assert not again.deleted and again.updated_at > tombstone[1]
    assert again.body is not None and again.body["sessions"] == ["a", "c"]


async def test_a_provider_ignoring_the_page_number_stops_the_pull(
    registrations_server: EmulatorServer,
) -> None:
    page = (
        b'{"items": [{"id": "a", "utcModifiedDate": "2026-01-01T00:00:00Z"}], '
        b'"total": 1000000000000}'
    )
    emulator = emulator_of(registrations_server)
    async with provider(registrations_server) as p:
        await pages(p, "sessions")
        for _ in range(3):
            emulator.queue_raw(200, page, route="GET /sessions")
        got = await pages(p, "sessions")
    assert len(got) == 2 and got[-1].last and not got[-1].settled


def test_a_page_with_a_run_of_19_digits_or_more_goes_to_the_exact_parser() -> None:
    assert load_json(b'{"n": 123456789012345678}')[1] is False  # 18 digits: fits 64 bits
    assert load_json(b'{"n": 1234567890123456789}')[1] is True
    assert load_json(b'{"n": -99999999999999999999999}') == ({"n": -99999999999999999999999}, True)
    assert load_json(b'{"a": "123456789", "b": 1234567890}')[1] is False  # runs apart
    assert load_json(b'{"s": "1234567890123456789"}')[1] is True  # in a text: exact, harmless


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-01-01T00:00:00.000Z", 1_767_225_600_000),
        ("2026-01-01T02:00:00.001+02:00", 1_767_225_600_001),
        ("2026-01-01T00:00:00.123", 1_767_225_600_123),  # no offset: UTC
        ("2026-01-01T00:00:00.0004Z", 1_767_225_600_000),  # below a millisecond: rounded
        ("2026-01-01T00:00:00.0006Z", 1_767_225_600_001),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999Z", None),
        ("9999-12-31T23:59:59.999Z", 253_402_300_799_999),
        ("9999-12-31T23:59:59.999-01:00", None),
        ("yesterday", None),
    ],
)
def test_utc_modified_date_to_epoch_ms(text: str, ms: int | None) -> None:
    assert parse_modified(text) == ms


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (200, b"<html><body>Service moved</body></html>", {"Content-Type": "text/html"}),
        (200, b"done", {"Content-Type": "text/plain"}),
        (201, b"", {}),
        (202, b"{}", {}),
    ],
)
async def test_odd_cancellation_answers_keep_the_request_pending(
    registrations_server: EmulatorServer,
    status: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    """Campaign finding (provider faults): a cancel answered 200 with an HTML page (a proxy's
    page, the provider never saw it) was recorded confirmed, the person still registered."""
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        made = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1"})], idempotency_key="r"
        )
        record = made.changes[0]

        async def lookup(collection: str, fields: Any) -> list[tuple[str, int, Any]]:
            return [(record.key, record.updated_at, record.body)]

        p.attach_lookup(lookup)
        emulator.queue_raw(status, body, headers)
        with pytest.raises(RetryableError):
            await p.push(
                [request_change(2, {"participantId": "p1", "sessionId": "s1", "action": "cancel"})],
                idempotency_key="c",
            )
    assert len(emulator.registered("p1", "s1")) == 1


@pytest.mark.parametrize("body", [b"", b"{}", b"null", b'{"status": "Cancelled"}'])
async def test_a_cancellation_answered_200_with_json_or_nothing_is_confirmed(
    registrations_server: EmulatorServer, body: bytes
) -> None:
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        made = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1"})], idempotency_key="r"
        )
        record = made.changes[0]

        async def lookup(collection: str, fields: Any) -> list[tuple[str, int, Any]]:
            return [(record.key, record.updated_at, record.body)]

        p.attach_lookup(lookup)
        emulator.queue_raw(200, body, {"Content-Type": "application/json"})
        result = await p.push(
            [request_change(2, {"participantId": "p1", "sessionId": "s1", "action": "cancel"})],
            idempotency_key="c",
        )
    assert result.outcomes[0].status == "confirmed"


async def test_a_cancel_asked_again_after_a_lost_answer_is_confirmed(
    registrations_server: EmulatorServer,
) -> None:
    """Campaign finding (provider faults, full size): a cancel whose answer was lost (the
    provider cancelled, the connection was cut) was refused locally when asked again once a
    pull had brought the registration as Cancelled; it is asked again with the same key, and
    the provider's replay confirms it."""
    emulator = seeded(registrations_server)
    async with provider(registrations_server) as p:
        made = await p.push(
            [request_change(1, {"participantId": "p1", "sessionId": "s1"})], idempotency_key="r"
        )
        record = made.changes[0]
        assert record.body is not None
        known = [(record.key, record.updated_at, dict(record.body))]

        async def lookup(collection: str, fields: Any) -> list[tuple[str, int, Any]]:
            return known

        p.attach_lookup(lookup)
        cancel = request_change(2, {"participantId": "p1", "sessionId": "s1", "action": "cancel"})
        emulator.faults.update(drop=1)  # the provider cancels, then the connection is cut
        with pytest.raises(ProviderError):
            await p.push([cancel], idempotency_key="c")
        assert emulator.registered("p1", "s1") == []
        # A pull meanwhile brings the registration as the provider has it: Cancelled.
        known[0] = (record.key, record.updated_at + 5, {**known[0][2], "status": "Cancelled"})
        again = await p.push([cancel], idempotency_key="c")
    assert again.outcomes[0].status == "confirmed", again.outcomes
    assert emulator.applied[f"{record.key}@cancel"] == 1
