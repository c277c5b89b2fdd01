"""The contract every provider kind passes against its emulator, as litestream runs one suite
over every replica backend (``RunWithReplicaClient``).

Each kind in ``KINDS`` supplies a ``Case``: its emulator with known credentials, the options
and secret that fit it, and what a valid batch of it is (changes, or files for a kind that
takes files). The suite builds the adapter as the daemon does (``registry.build_provider``)
and sends the batch the way the delivery engine does (``push``, or ``push_files``), against
the emulator answering as documented, or as a fault makes it answer:

* the documented success is taken, every record applied once; an answer of another shape,
  2xx included, is not a delivery (``UnexpectedAnswer``, retryable), and nothing is applied;
* a refusal (400, 422) is permanent, and says why;
* a redirect is not followed (``ProviderMisconfigured``), and says where it pointed;
* a 401 or 403 is an ``AuthError``;
* ``Retry-After`` is read in seconds and as an HTTP date;
* a provider that does not answer in ``timeout_s`` is ``ProviderUnavailable``;
* a secret the provider echoes back (its ``Authorization`` header, the request's body) never
  leaves the adapter, whatever the status.

A new kind adds its ``Case`` to ``CASES`` (``test_every_kind_supplies_its_case`` says so);
docs/adding-a-kind.md lists this suite among the tests a kind passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from dropsync.adapters.base import (
    FileBatchProvider,
    FilePart,
    OutgoingChange,
    Provider,
    PushResult,
)
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import Emulator, EmulatorServer
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
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.registrations import REQUESTS
from dropsync.adapters.registrations.emulator import RegistrationsEmulator
from dropsync.adapters.registry import KINDS, build_provider, secret_values

pytestmark = pytest.mark.anyio

SECRET = "S3cret-tok_9f8e7d6c/+q"  # every kind's secret (or the one token in it)
TIMEOUT_S = 1.0

Batch = Sequence[OutgoingChange] | Sequence[FilePart]


@dataclass(frozen=True)
class Case:
    """What a kind supplies to the contract."""

    emulator: Callable[[], Emulator]  # its emulator, taking ``secret``
    options: dict[str, Any]  # the kind's options of ``[providers.NAME]`` that fit it
    secret: str
    batch: Callable[[Path], Batch]  # a valid batch (files are written under the folder)
    # 2xx answers that are not this kind's success, besides those of no kind (below).
    not_success: list[tuple[int, str, str]] = field(default_factory=list)


def contact(tmp: Path) -> Batch:
    key = "guest@example.com"
    return [OutgoingChange(1, "contacts", key, 1000, False, {"email": key}, "k-contact")]


def favourite(tmp: Path) -> Batch:
    item = {"user": "alice", "item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00Z"}
    return [OutgoingChange(1, "favourites", "alice:s1", 1_700_000_000_000, False, item, "k-fav")]


def registration(tmp: Path) -> Batch:
    body = {"participantId": "p1", "sessionId": "s1", "action": "register"}
    return [OutgoingChange(1, REQUESTS, "q1", 1_700_000_000_001, False, body, "k-reg")]


def users_file(tmp: Path) -> Batch:
    path = tmp / "users-0001.json"
    path.write_bytes(orjson.dumps([{"data": {"id": 1}, "createdAt": 1, "updatedAt": 1}]))
    return [FilePart(path, {"brandId": 15, "tableName": "users"}, 1, path.stat().st_size)]


def registrations_emulator() -> Emulator:
    emulator = RegistrationsEmulator(username="bot", password=SECRET, event_id="ev-1")
    emulator.put("participants", [{"id": "p1", "RegistrationStatus": "Registered"}])
    emulator.put("sessions", [{"id": "s1", "capacity": 10}])
    return emulator


JSON = "application/json"
CASES: dict[str, Case] = {
    "crm": Case(
        lambda: CrmEmulator({"acc_1": SECRET}),
        {"account_id": "acc_1"},
        SECRET,
        contact,
        # Its success is 201 with a job id (docs/providers.md).
        [(200, '{"_id": "j1", "status": "queued"}', JSON), (201, '{"status": "queued"}', JSON)],
    ),
    "favourites": Case(
        lambda: FavouritesEmulator({SECRET: "alice"}),
        {},
        orjson.dumps({"alice": SECRET}).decode(),
        favourite,
        # Its document gives no answer body: any JSON that reports no error is a success.
    ),
    "registrations": Case(
        registrations_emulator,
        {"username": "bot", "event_id": "ev-1"},
        SECRET,
        registration,
        [(200, "[1]", JSON), (201, '{"status": "queued"}', JSON)],  # the login's answer
    ),
    "churn": Case(
        lambda: ChurnEmulator(SECRET),
        {"brand_id": 15},
        SECRET,
        users_file,
        [(201, '{"statusCode": 201, "message": "ok"}', JSON), (200, "[1]", JSON)],
    ),
}
# 2xx answers that are no kind's success: a portal's page, a bare word, a reported error.
NO_KIND_S_SUCCESS = [
    (200, "<html><body>Welcome to the portal</body></html>", "text/html"),
    (200, "OK", "text/plain"),
    (200, '{"error": "session expired"}', JSON),
]


@dataclass
class Running:
    """A kind's adapter against its emulator, and a valid batch to send it."""

    kind: str
    server: EmulatorServer
    provider: Provider
    batch: Batch

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    def fault(self, **settings: Any) -> None:
        """The emulator answers every request so from now on (see ``Faults``)."""
        self.server.faults.update(**settings)

    async def send(self) -> PushResult:
        """Send the batch as the delivery engine does: files to a kind that takes files."""
        if isinstance(self.provider, FileBatchProvider):
            files = cast(Sequence[FilePart], self.batch)
            return await self.provider.push_files(files, idempotency_key="k")
        changes = cast(Sequence[OutgoingChange], self.batch)
        return await self.provider.push(changes, idempotency_key="k")

    async def refused(self) -> ProviderError:
        """The error the batch is refused with; nothing of it is applied."""
        with pytest.raises(ProviderError) as raised:
            await self.send()
        assert sum(self.emulator.applied.values()) == 0
        return raised.value


@pytest.fixture(params=KINDS)
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Running]:
    """Each kind in turn: its emulator on loopback, its adapter built as the daemon builds it."""
    kind = request.param
    case = CASES[kind]
    with EmulatorServer(case.emulator()) as server:
        provider = build_provider(
            name=kind,
            kind=kind,
            base_url=server.base_url,
            options=case.options,
            secret=case.secret,
            timeout_s=TIMEOUT_S,
            batch_max_items=None,
        )
        async with provider:
            yield Running(kind, server, provider, case.batch(tmp_path))


def test_every_kind_supplies_its_case() -> None:
    assert sorted(CASES) == sorted(KINDS)


async def test_the_documented_success_is_a_delivery_of_every_record_once(running: Running) -> None:
    result = await running.send()
    assert result.state in ("accepted", "confirmed")
    assert 200 <= result.status < 300
    applied = running.emulator.applied
    assert applied and set(applied.values()) == {1}


def not_success(kind: str) -> Iterator[tuple[int, str, str]]:
    yield from NO_KIND_S_SUCCESS
    yield from CASES[kind].not_success


async def test_a_2xx_of_another_shape_is_not_a_delivery(running: Running) -> None:
    for status, body, content_type in not_success(running.kind):
        running.fault(status=status, body=body, content_type=content_type)
        error = await running.refused()
        assert isinstance(error, UnexpectedAnswer), (status, body, error)
        assert isinstance(error, RetryableError)  # the records stay queued
        assert error.status == status


@pytest.mark.parametrize("status", [400, 422])
async def test_a_refusal_is_permanent_and_says_why(running: Running, status: int) -> None:
    running.fault(
        status=status, body='{"error": "the batch is refused: field x"}', content_type=JSON
    )
    error = await running.refused()
    assert isinstance(error, PermanentError)
    assert error.status == status
    assert "the batch is refused: field x" in str(error)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed(running: Running, status: int) -> None:
    running.fault(status=status, body="", headers={"Location": "https://elsewhere.example/api"})
    error = await running.refused()
    assert isinstance(error, ProviderMisconfigured)
    assert "https://elsewhere.example/api" in str(error)
    assert len(running.emulator.arrivals) == 1  # the target was not asked


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_an_auth_error(running: Running, status: int) -> None:
    running.fault(status=status, body='{"error": "invalid token"}', content_type=JSON)
    error = await running.refused()
    assert isinstance(error, AuthError)
    assert error.status == status


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_read_in_seconds_and_as_a_date(running: Running, status: int) -> None:
    running.fault(status=status, retry_after="7")
    error = await running.refused()
    assert isinstance(error, ProviderThrottled)
    assert error.retry_after == 7
    later = datetime.now(UTC) + timedelta(seconds=120)
    running.fault(status=status, retry_after=format_datetime(later, usegmt=True))
    error = await running.refused()
    assert isinstance(error, ProviderThrottled)
    assert error.retry_after is not None and 60 < error.retry_after <= 120


async def test_no_whole_answer_within_timeout_s_is_unavailable(running: Running) -> None:
    running.fault(latency_ms=int(TIMEOUT_S * 1000) + 2000)
    error = await running.refused()
    assert isinstance(error, ProviderUnavailable)
    assert f"timeout_s = {TIMEOUT_S:g} s" in str(error)


@pytest.mark.parametrize("status", [200, 400, 401, 500])
async def test_a_secret_echoed_back_never_leaves_the_adapter(running: Running, status: int) -> None:
    running.emulator.echo_refusals = True  # a refusal of credentials quotes what it was sent
    running.fault(
        status=status,
        body="you sent {authorization} and {body}",
        content_type="text/plain",
        headers={"X-Echo": "{authorization}"},
    )
    error = await running.refused()
    said = f"{error} {error!r} {error.args}"
    values = secret_values(running.kind, CASES[running.kind].secret)
    assert values and all(value not in said for value in values)
    assert "[redacted]" in said  # what was echoed was there, and was removed
