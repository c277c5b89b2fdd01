"""The HTTP boundary's extension points, on a kind of the tests' own against a real server on
loopback: a session that a login gives (carried, renewed, logged in again once on a 401, its
token never said) and a request's refusal read by the kind (said without a secret)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson
import pytest
from dropsync.adapters.base import OutgoingChange, ProviderLimits, PushResult, RequestOutcome
from dropsync.adapters.emulators.common import Emulator, EmulatorServer
from dropsync.adapters.errors import AuthError, RetryableError, UnexpectedAnswer
from dropsync.adapters.http import Answer, HttpAdapter, Session, json_body
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.anyio
PASSWORD = "door-pa55word"


class Doorkeeper(Emulator):
    """Hands out tokens for a password; ``/data`` and ``/ask`` want one (faults apply to
    them, not to the login)."""

    name = "doorkeeper"

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()
        self.issued: list[str] = []
        self.logins = 0
        self.login_answer: bytes | None = None  # a raw login answer, once
        self.refuse = 0  # data requests answered 401 whatever they carry
        self.authorisations: list[str] = []

    def routes(self) -> list[Route]:
        """The login, a resource, a request."""
        return [
            Route("/login", self.login, methods=["POST"]),
            Route("/data", self.data, methods=["GET"]),
            Route("/ask", self.ask, methods=["POST"]),
        ]

    async def login(self, request: Request) -> Response:
        """200 ``{token, expiresIn}`` for the password, else 401 quoting what was sent."""
        sent = await request.body()
        self.logins += 1
        if self.login_answer is not None:
            raw, self.login_answer = self.login_answer, None
            return Response(raw, media_type="application/json")
        if orjson.loads(sent).get("password") != PASSWORD:
            return JSONResponse({"reason": f"bad password: {sent.decode()}"}, status_code=401)
        token = f"door-token-{self.logins}-x9"
        self.tokens.add(token)
        self.issued.append(token)
        return JSONResponse({"token": token, "expiresIn": 3600})

    async def data(self, request: Request) -> Response:
        """200 with a valid token, else 401 quoting it."""
        return await self.handle(request, self._answer(request, 200, {"ok": True}))

    async def ask(self, request: Request) -> Response:
        """201 ``{id}`` with a valid token (faults give the refusals)."""
        return await self.handle(request, self._answer(request, 201, {"id": "a1"}))

    def _answer(self, request: Request, status: int, body: Any) -> Any:
        header = request.headers.get("authorization", "")

        async def apply(sent: bytes) -> tuple[int, Any]:
            self.authorisations.append(header)
            if self.refuse or header.removeprefix("Bearer ") not in self.tokens:
                self.refuse = max(0, self.refuse - 1)
                return 401, {"error": f"who is {header}?"}
            return status, body

        return apply


def is_object(answer: Answer) -> Any:
    """Any JSON object."""
    body = json_body(answer)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    return body


class Keyed(HttpAdapter):
    """A kind whose requests carry a session: a password logs in, a token is carried."""

    name = "door"
    limits = ProviderLimits(max_items=1, can_push=True, can_pull=False)

    def __init__(self, base_url: str, password: str = PASSWORD) -> None:
        super().__init__(base_url, 5.0, secrets=())
        self.keep_secret([password])
        self.password = password
        self.renew_at: float | None = None  # a session due for renewal at once, when set

    async def _log_in(self) -> Session:
        return await self.send(
            "POST",
            "/login",
            expect=self.session_of,
            content=orjson.dumps({"password": self.password}),
        )

    def session_of(self, answer: Answer) -> Session:
        body = is_object(answer)
        token = body.get("token")
        if isinstance(token, str):
            self.keep_secret([token])
        if not isinstance(token, str) or not isinstance(body.get("expiresIn"), int):
            raise ValueError("expected {token, expiresIn}")
        session = Session.lasting({"Authorization": f"Bearer {token}"}, body["expiresIn"])
        if self.renew_at is not None:
            session = Session(session.headers, self.renew_at)
        return session

    async def data(self) -> Any:
        with self._boundary():
            return await self.send("GET", "/data", session=True, expect=is_object)

    async def upload(self, chunks: list[bytes]) -> Any:
        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        with self._boundary():
            return await self.send(
                "POST",
                "/ask",
                session=True,
                expect=is_object,
                content=stream(),
                upload_bytes=sum(map(len, chunks)),
            )

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        outcomes = []
        for change in batch:
            said = await self.send(
                "POST",
                "/ask",
                session=True,
                expect=lambda answer: "",
                refusal=self.refused,
                content=b"{}",
            )
            if said:
                outcomes.append(RequestOutcome(change.entry_id, "refused", said))
            else:
                outcomes.append(RequestOutcome(change.entry_id, "confirmed"))
        return PushResult(state="confirmed", status=201, outcomes=outcomes)

    @staticmethod
    def refused(answer: Answer) -> str | None:
        """409 refuses the request (the body's words, as they are: the boundary removes the
        secrets); 418 is the kind's own retryable reading; anything else, the table's."""
        if answer.status == 409:
            return answer.text()
        if answer.status == 418:
            raise RetryableError(f"a teapot: {answer.text()}", status=418)
        return None


@pytest.fixture
def door() -> Iterator[EmulatorServer]:
    with EmulatorServer(Doorkeeper()) as server:
        yield server


def keeper(server: EmulatorServer) -> Doorkeeper:
    emulator = server.emulator
    assert isinstance(emulator, Doorkeeper)
    return emulator


def change(entry_id: int = 1) -> OutgoingChange:
    return OutgoingChange(entry_id, "asks", f"k{entry_id}", 1, False, {}, f"key{entry_id}")


async def test_one_login_and_its_session_carried_by_each_request(door: EmulatorServer) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        await adapter.data()
        await adapter.data()
    assert emulator.logins == 1
    assert emulator.authorisations == [f"Bearer {emulator.issued[0]}"] * 2


async def test_a_401_logs_in_again_once_and_asks_again(door: EmulatorServer) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        await adapter.data()
        emulator.tokens.clear()  # the provider forgot every session
        await adapter.data()
    assert emulator.logins == 2
    assert [a.status for a in emulator.requests("/data")] == [200, 401, 200]


async def test_a_second_401_is_refused_credentials_and_nothing_more_is_asked(
    door: EmulatorServer,
) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        await adapter.data()
        emulator.refuse = 2
        with pytest.raises(AuthError) as raised:
            await adapter.data()
    assert [a.status for a in emulator.requests("/data")] == [200, 401, 401]
    assert emulator.logins == 2  # the first, and the one after the first 401
    assert "[redacted]" in str(raised.value)
    assert not any(token in str(raised.value) for token in emulator.issued)


async def test_a_streamed_upload_answered_401_is_not_sent_twice(door: EmulatorServer) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        assert await adapter.upload([b"{", b"}"]) == {"id": "a1"}
        emulator.refuse = 1  # it could not be read again
        with pytest.raises(AuthError):
            await adapter.upload([b"{", b"}"])
    assert [a.status for a in emulator.requests("/ask")] == [201, 401]
    assert emulator.logins == 1


async def test_a_session_due_for_renewal_logs_in_before_the_request(
    door: EmulatorServer,
) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        adapter.renew_at = time.monotonic() - 1  # every session is due at once
        await adapter.data()
        await adapter.data()
    assert emulator.logins == 2
    assert [a.status for a in emulator.requests("/data")] == [200, 200]  # no 401 needed


def test_a_session_is_renewed_a_tenth_of_its_life_early_at_most_a_minute() -> None:
    for life, early in ((100.0, 10.0), (3600.0, 60.0)):
        before = time.monotonic()
        session = Session.lasting({}, life)
        assert before + life - early <= session.renew_at <= time.monotonic() + life - early
    assert Session.lasting({}, 1e300).renew_at < time.monotonic() + 367 * 86400


async def test_a_token_in_a_login_answer_of_another_shape_is_never_said(
    door: EmulatorServer,
) -> None:
    emulator = keeper(door)
    emulator.login_answer = b'{"token": "door-token-odd-77", "expiresIn": "soon"}'
    async with Keyed(door.base_url) as adapter:
        with pytest.raises(UnexpectedAnswer) as raised:
            await adapter.data()
    assert "door-token-odd-77" not in str(raised.value) and "[redacted]" in str(raised.value)


async def test_a_password_echoed_by_a_refused_login_is_never_said(door: EmulatorServer) -> None:
    async with Keyed(door.base_url, password="not-the-pa55word") as adapter:
        with pytest.raises(AuthError) as raised:
            await adapter.data()
    assert "not-the-pa55word" not in str(raised.value) and "[redacted]" in str(raised.value)


async def test_a_refusal_is_the_kind_s_outcome_without_the_session_s_token(
    door: EmulatorServer,
) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        emulator.faults.update(status=409, count=1, body="no, {authorization}")
        refused = await adapter.push([change()], idempotency_key="a")
        confirmed = await adapter.push([change(2)], idempotency_key="b")
    [outcome] = refused.outcomes
    assert outcome.status == "refused" and outcome.reason == "no, Bearer [redacted]"
    assert [o.status for o in confirmed.outcomes] == ["confirmed"]


@pytest.mark.parametrize(
    ("status", "kind", "words"), [(418, RetryableError, "a teapot"), (500, RetryableError, "500")]
)
async def test_an_answer_that_is_no_refusal_is_an_error_without_the_token(
    door: EmulatorServer, status: int, kind: type[Exception], words: str
) -> None:
    emulator = keeper(door)
    async with Keyed(door.base_url) as adapter:
        emulator.faults.update(status=status, count=1, body="echo {authorization}")
        with pytest.raises(kind) as raised:
            await adapter.push([change()], idempotency_key="a")
    assert words in str(raised.value) and "Bearer [redacted]" in str(raised.value)
    assert not any(token in str(raised.value) for token in emulator.issued)
