"""Every shape of provider answer, against the real emulators: what counts as a success,
what each status means, Retry-After of any value, and secrets never in what comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest
from dropsync.adapters.base import OutgoingChange, change_idempotency_key
from dropsync.adapters.crm.adapter import CrmProvider, parse_options
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderError,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
    RetryableError,
    UnexpectedAnswer,
)
from dropsync.adapters.favourites.adapter import FavouritesProvider
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.http import MAX_RETRY_AFTER_S, Answer, error_for, parse_retry_after
from dropsync.adapters.options import OptionError
from dropsync.adapters.redact import Redactor
from dropsync.adapters.registry import build_provider

pytestmark = pytest.mark.anyio

SECRET = "crm-S3cret/with+odd<chars>&'q'"
USER_TOKEN = "tok-alice-9f8e7d6c"


def contact(i: int) -> OutgoingChange:
    body = {"email": f"guest{i}@example.com"}
    return OutgoingChange(
        i,
        "contacts",
        body["email"],
        1000 + i,
        False,
        body,
        change_idempotency_key("crm", "contacts", body["email"], 1000 + i),
    )


def favourite(item: str) -> OutgoingChange:
    body = {"user": "alice", "item": item, "action": "ADD", "actionDate": "x"}
    return OutgoingChange(1, "favourites", f"alice:{item}", 1_700_000_000_000, False, body, "k")


@pytest.fixture
def crm_server() -> Any:
    with EmulatorServer(CrmEmulator({"acc_1": SECRET})) as server:
        yield server


@pytest.fixture
def favourites_server() -> Any:
    emulator = FavouritesEmulator({USER_TOKEN: "alice"})
    emulator.seed("alice", [{"item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00Z"}])
    with EmulatorServer(emulator) as server:
        yield server


@pytest.fixture
async def crm(crm_server: EmulatorServer) -> AsyncIterator[CrmProvider]:
    provider = CrmProvider(
        "crm", crm_server.base_url, parse_options({"account_id": "acc_1"}), SECRET, 5, None
    )
    async with provider:
        yield provider


@pytest.fixture
async def favourites(favourites_server: EmulatorServer) -> AsyncIterator[FavouritesProvider]:
    provider = FavouritesProvider(
        "fav", favourites_server.base_url, favourite_options({}), {"alice": USER_TOKEN}, 5, None
    )
    async with provider:
        yield provider


# Item 1: a success is the kind's documented success answer, nothing else.


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html><body>Welcome to the portal</body></html>", "text/html"),
        (201, "", None),
        (201, "{}", "application/json"),
        (201, '{"status": "queued"}', "application/json"),
        (201, '{"_id": "", "status": "queued"}', "application/json"),
        (201, '{"_id": "j1", "status": "failed"}', "application/json"),
        (201, '["j1"]', "application/json"),
        (201, '{"_id": "j1", "status": "queued"', "application/json"),  # cut short
        (200, '{"_id": "j1", "status": "queued"}', "application/json"),
        (202, '{"_id": "j1", "status": "queued"}', "application/json"),
        (204, "", None),
        (299, '{"_id": "j1", "status": "queued"}', "application/json"),
    ],
)
async def test_crm_anything_but_201_queued_with_a_job_id_is_not_a_delivery(
    crm_server: EmulatorServer, crm: CrmProvider, status: int, body: str, content_type: str | None
) -> None:
    crm_server.faults.update(status=status, body=body, content_type=content_type)
    with pytest.raises(UnexpectedAnswer) as raised:
        await crm.push([contact(1)], idempotency_key="k")
    assert isinstance(raised.value, RetryableError)  # the entries stay queued
    assert raised.value.status == status
    assert f"HTTP {status}" in str(raised.value)
    assert crm_server.emulator.contacts == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "delivered"),
    [
        (200, "<!doctype html><title>Sign in</title>", "text/html", False),
        (200, "OK", "text/plain", False),
        (200, '{"error": "session expired"}', "application/json", False),
        (206, "", None, False),
        (200, "", None, True),
        (204, "", None, True),
        (201, '{"status": "ok"}', "application/json", True),
        (200, "[]", "application/json", True),
    ],
)
async def test_favourites_post_success_is_a_2xx_with_an_empty_or_json_body(
    favourites_server: EmulatorServer,
    favourites: FavouritesProvider,
    status: int,
    body: str,
    content_type: str | None,
    delivered: bool,
) -> None:
    favourites_server.faults.update(status=status, body=body, content_type=content_type)
    if delivered:
        result = await favourites.push([favourite("s2")], idempotency_key="k")
        assert result.state == "confirmed"
    else:
        with pytest.raises(UnexpectedAnswer):
            await favourites.push([favourite("s2")], idempotency_key="k")


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html>maintenance</html>", "text/html"),
        (200, "{}", "application/json"),
        (200, '{"items": []}', "application/json"),
        (200, '[{"id": 1}, {"id": 2}]', "application/json"),
        (204, "", None),
        (200, "", None),
    ],
)
async def test_a_favourites_list_of_another_shape_is_never_read_as_empty(
    favourites_server: EmulatorServer,
    favourites: FavouritesProvider,
    status: int,
    body: str,
    content_type: str | None,
) -> None:
    favourites_server.faults.update(status=status, body=body, content_type=content_type)
    with pytest.raises(UnexpectedAnswer):
        await favourites.pull(None)


async def test_unreadable_items_of_a_list_are_skipped_and_counted(
    favourites_server: EmulatorServer, favourites: FavouritesProvider
) -> None:
    good = {"item": "s9", "action": "ADD", "actionDate": "2024-01-01T00:00:00.000Z"}
    odd = [{"item": "s8", "action": "LIKE", "actionDate": "2024-01-01T00:00:00Z"}, 7, None]
    favourites_server.faults.update(status=200, body=orjson.dumps([good, *odd]).decode())
    page = await favourites.pull(None)
    assert [c.key for c in page.changes] == ["alice:s9"]
    assert page.skipped == 3


# Item 14: the status table.


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_a_misconfiguration_naming_the_location(
    crm_server: EmulatorServer, crm: CrmProvider, status: int
) -> None:
    crm_server.faults.update(
        status=status, headers={"Location": "https://crm.example.net/v2/sync_data"}, body=""
    )
    with pytest.raises(ProviderMisconfigured) as raised:
        await crm.push([contact(1)], idempotency_key="k")
    assert isinstance(raised.value, RetryableError)
    assert "https://crm.example.net/v2/sync_data" in str(raised.value)
    assert "base_url" in str(raised.value)
    assert len(crm_server.emulator.requests("/account")) == 1  # not followed


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (408, RetryableError),
        (409, RetryableError),
        (421, RetryableError),
        (423, RetryableError),
        (425, RetryableError),
        (429, ProviderThrottled),
        (500, RetryableError),
        (502, RetryableError),
        (503, ProviderThrottled),
        (504, RetryableError),
        (404, ProviderMisconfigured),
        (405, ProviderMisconfigured),
        (410, ProviderMisconfigured),
        (415, ProviderMisconfigured),
        (501, ProviderMisconfigured),
        (401, AuthError),
        (403, AuthError),
        (407, ProviderMisconfigured),
        (400, PermanentError),
        (413, PermanentError),
        (422, PermanentError),
    ],
)
async def test_each_status_maps_to_its_type(
    crm_server: EmulatorServer, crm: CrmProvider, status: int, error: type[ProviderError]
) -> None:
    crm_server.faults.update(status=status, body="", content_type="text/plain")
    with pytest.raises(ProviderError) as raised:
        await crm.push([contact(1)], idempotency_key="k")
    assert type(raised.value) is error
    assert f"HTTP {status}" in str(raised.value)


async def test_a_5xx_without_a_body_says_so(crm_server: EmulatorServer, crm: CrmProvider) -> None:
    crm_server.faults.update(status=502, body="")
    with pytest.raises(RetryableError) as raised:
        await crm.push([contact(1)], idempotency_key="k")
    assert "empty body" in str(raised.value)


@pytest.mark.parametrize("status", [100, 199, 600, 999])
def test_statuses_outside_the_table_are_unexpected_answers(status: int) -> None:
    answer = Answer("POST", "/x", status, httpx.Headers(), b"", True)
    assert type(error_for(answer, Redactor())) is UnexpectedAnswer


# Item 5: Retry-After of any value never raises and stays bounded.


@pytest.mark.parametrize(
    "value",
    [
        "99999999999999999999",
        "9" * 5000,
        "-5",
        "1e400",
        "1.5",
        "soon",
        "\x00\x01",
        "٣",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sat, 01 Jan 0001 00:00:00 GMT",
        "Mon, 99 Foo 2024 99:99:99 GMT",
        "Thu, 01 Jan 1970 00:00:00 -0000",
        "",
    ],
)
def test_retry_after_of_any_value_never_raises(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER_S


def test_retry_after_far_ahead_is_read_as_the_bound() -> None:
    assert parse_retry_after("99999999999999999999") == MAX_RETRY_AFTER_S
    far = format_datetime(datetime(9999, 12, 31, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(far) == MAX_RETRY_AFTER_S


async def test_a_huge_retry_after_from_the_provider_is_bounded(
    crm_server: EmulatorServer, crm: CrmProvider
) -> None:
    crm_server.faults.update(status=429, retry_after="99999999999999999999")
    with pytest.raises(ProviderThrottled) as raised:
        await crm.push([contact(1)], idempotency_key="k")
    assert raised.value.retry_after == MAX_RETRY_AFTER_S


# Item 16: what the provider echoes never comes back out of the adapter.

ECHO_BODY = '{"error": "bad request", "received": {"authorization": "{authorization}"}}'


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500, 200, 201, 302])
async def test_an_echoed_crm_token_never_leaves_the_adapter(
    crm_server: EmulatorServer, crm: CrmProvider, status: int
) -> None:
    crm_server.faults.update(
        status=status,
        body=ECHO_BODY,
        content_type="application/json",
        headers={"Location": "https://x.example/?auth={authorization}"},
    )
    with pytest.raises(ProviderError) as raised:
        await crm.push([contact(1)], idempotency_key="k")
    texts = [str(raised.value), *(str(a) for a in raised.value.args)]
    if isinstance(raised.value, PermanentError):
        texts.append(raised.value.reason)
    for text in texts:
        assert SECRET not in text
        assert "S3cret" not in text
    assert "[redacted]" in str(raised.value)


@pytest.mark.parametrize("status", [400, 401, 500, 200])
async def test_an_echoed_user_token_never_leaves_the_favourites_adapter(
    favourites_server: EmulatorServer, favourites: FavouritesProvider, status: int
) -> None:
    favourites_server.faults.update(status=status, body="<p>{authorization}</p>")
    for call in (
        lambda: favourites.push([favourite("s2")], idempotency_key="k"),
        lambda: favourites.pull(None),
    ):
        with pytest.raises(ProviderError) as raised:
            await call()
        assert USER_TOKEN not in str(raised.value)
        assert "[redacted]" in str(raised.value)


async def test_a_protocol_error_quoting_the_token_never_leaves_the_adapter() -> None:
    """A provider whose status line echoes the request's Authorization header: h11's own
    error text quotes it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        auth = next(h for h in request.split(b"\r\n") if h.lower().startswith(b"authorization"))
        writer.write(b"HTTP/1.1 2OO " + auth + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        provider = CrmProvider(
            "crm", f"http://127.0.0.1:{port}", parse_options({"account_id": "a"}), SECRET, 5, None
        )
        async with provider:
            with pytest.raises(ProviderUnavailable) as raised:
                await provider.push([contact(1)], idempotency_key="k")
    finally:
        server.close()
    assert "illegal status line" in str(raised.value)
    assert SECRET not in str(raised.value) and "S3cret" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize(
    "secret", ["tok-part-one\ntok-part-two", "tok-part-one\x00tok-part-two", "tok-é-part-one"]
)
async def test_a_token_a_header_cannot_carry_never_reaches_httpx(
    crm_server: EmulatorServer, secret: str
) -> None:
    with pytest.raises(OptionError) as refused:
        CrmProvider(
            "crm", crm_server.base_url, parse_options({"account_id": "acc_1"}), secret, 5, None
        )
    assert "part-one" not in str(refused.value)
    with pytest.raises(OptionError):
        FavouritesProvider(
            "fav", crm_server.base_url, favourite_options({}), {"alice": secret}, 5, None
        )


async def test_httpx_text_about_a_bad_header_never_leaves_the_adapter(
    crm: CrmProvider,
) -> None:
    # h11 says "Illegal header value b'Token token=...'": only the error's type goes out.
    for value in ("Token token=tok-part-one\ntok-part-two", "Token token=tok-é-part-one"):
        with pytest.raises(RetryableError) as raised:
            await crm.send("GET", "/", expect=lambda a: a, headers={"Authorization": value})
        assert "part-one" not in str(raised.value) and "part-two" not in str(raised.value)
        assert raised.value.__cause__ is None


async def test_network_errors_keep_their_cause(crm_server: EmulatorServer) -> None:
    crm_server.stop()
    provider = CrmProvider(
        "crm", crm_server.base_url, parse_options({"account_id": "acc_1"}), SECRET, 5, None
    )
    async with provider:
        with pytest.raises(ProviderUnavailable) as raised:
            await provider.push([contact(1)], idempotency_key="k")
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


async def test_another_secret_of_the_provider_is_never_said_either(
    crm_server: EmulatorServer,
) -> None:
    """The listener's webhook token rides in the CRM request's body (options.webhook.url)."""
    token = "hook-token-8d1e5a"
    provider = build_provider(
        name="crm",
        kind="crm",
        base_url=crm_server.base_url,
        options={"account_id": "acc_1", "webhook_url": f"https://me.example/webhooks/crm/{token}"},
        secret=SECRET,
        timeout_s=5,
        batch_max_items=None,
        also_secret=[token],
    )
    crm_server.faults.update(status=422, body='{"error": "bad", "request": {body}}')
    async with provider:
        with pytest.raises(PermanentError) as raised:
            await provider.push([contact(1)], idempotency_key="k")
    assert "webhooks/crm/[redacted]" in raised.value.reason
    assert token not in raised.value.reason and token not in str(raised.value)
