"""An answer sent before the request's body was read: the server answers an upload at once
(401, 413) and closes, or answers and keeps reading. Raw socket servers on loopback and the
churn emulator's early 401; the churn adapter's token check before a large upload and after
an upload cut off without an answer."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from dropsync.adapters import early_answer
from dropsync.adapters.base import FilePart
from dropsync.adapters.churn.adapter import ChurnProvider, parse_options
from dropsync.adapters.churn.emulator import UNAUTHORIZED, ChurnEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import (
    AuthError,
    PermanentError,
    ProviderUnavailable,
    UnexpectedAnswer,
)
from dropsync.adapters.http import fetch, make_client

from tests.raw_provider import RawProvider, RawRequest, answer

pytestmark = pytest.mark.anyio

TOKEN = "churn-token-early-401"
MB = 1 << 20


def churn(base_url: str, token: str = TOKEN, **options: object) -> ChurnProvider:
    parsed = parse_options({"brand_id": 15, **options})
    return ChurnProvider("churn", base_url, parsed, token, timeout_s=20, batch_max_items=None)


def upload_file(tmp_path: Path, megabytes: int) -> FilePart:
    """A file of documents of about ``megabytes`` MB."""
    document = orjson.dumps({"data": {"id": 1, "pad": "x" * 1000}, "createdAt": 1, "updatedAt": 1})
    count = megabytes * MB // (len(document) + 2)
    path = tmp_path / "churn-1-0001.json"
    path.write_bytes(b"[" + b",\n".join([document] * count) + b"]")
    return FilePart(path, {"brandId": 15, "tableName": "user"}, count, path.stat().st_size)


async def body(megabytes: int) -> AsyncIterator[bytes]:
    chunk = bytes(64 << 10)
    for _ in range(megabytes * 16):
        yield chunk


def early(status: int, payload: object) -> RawProvider:
    """Answers each request as soon as its head is read, then closes without reading the
    body (the kernel resets the connection: the body is still arriving)."""

    def handler(request: RawRequest, connection: socket.socket) -> None:
        answer(connection, status, payload)

    return RawProvider(handler, read_body=False)


class Draining:
    """Answers at once, then reads (and counts) the body until the client stops sending."""

    def __init__(self, status: int, payload: object) -> None:
        self.received = 0
        self.done = threading.Event()
        self.status, self.payload = status, payload

    def __call__(self, request: RawRequest, connection: socket.socket) -> None:
        answer(connection, self.status, self.payload)
        try:
            connection.settimeout(5)
            while chunk := connection.recv(1 << 20):
                self.received += len(chunk)
        except OSError:
            pass
        finally:
            self.done.set()


@pytest.fixture
def early_401() -> Iterator[EmulatorServer]:
    emulator = ChurnEmulator(TOKEN)
    emulator.early_401 = True
    with EmulatorServer(emulator) as server:
        yield server


def test_the_early_answer_backend_is_installed_in_every_adapter_client() -> None:
    # It sits on httpx's private attributes: an httpx that moves them fails here, not later.
    client = make_client("http://127.0.0.1:9")
    assert early_answer.install(client)
    assert isinstance(client._transport._pool._network_backend, early_answer.EarlyAnswerBackend)  # type: ignore[attr-defined]


@pytest.mark.parametrize("megabytes", [1, 64])
async def test_an_answer_sent_before_the_body_is_read_is_read(megabytes: int) -> None:
    with early(413, {"error": "too large"}) as server:
        async with make_client(server.base_url) as client:
            got = await fetch(
                client,
                "POST",
                "/client-files",
                timeout_s=20,
                content=body(megabytes),
                headers={"Content-Length": str(megabytes * MB)},
            )
    assert got.status == 413 and orjson.loads(got.body) == {"error": "too large"}


async def test_an_upload_stops_when_the_server_has_answered() -> None:
    draining = Draining(401, UNAUTHORIZED)
    with RawProvider(draining, read_body=False) as server:
        async with make_client(server.base_url) as client:
            got = await fetch(
                client,
                "POST",
                "/client-files",
                timeout_s=20,
                content=body(256),
                headers={"Content-Length": str(256 * MB)},
            )
        assert got.status == 401
        assert draining.done.wait(10)
    assert draining.received < 64 * MB  # not the 256 MB: it stopped once the answer came


async def test_an_early_401_that_closes_the_connection_is_refused_credentials(
    tmp_path: Path, early_401: EmulatorServer
) -> None:
    part = upload_file(tmp_path, 1)  # under probe_above_mb: no check first
    async with churn(early_401.base_url, "not-the-token", probe_above_mb=8) as adapter:
        with pytest.raises(AuthError) as refused:
            await adapter.push_files([part], idempotency_key="k")
    assert refused.value.status == 401
    assert "not-the-token" not in str(refused.value)


async def test_a_large_upload_is_not_sent_when_the_token_is_refused(
    tmp_path: Path,
) -> None:
    # A server that reads the whole body before it answers: a check of the token first.
    emulator = ChurnEmulator(TOKEN)
    part = upload_file(tmp_path, 3)
    with EmulatorServer(emulator) as server:
        async with churn(server.base_url, "not-the-token", probe_above_mb=1) as adapter:
            with pytest.raises(AuthError, match=r"before an upload of 3\.0 MB"):
                await adapter.push_files([part], idempotency_key="k")
        assert emulator.requests() == [] and emulator.uploads == []  # nothing was streamed
        async with churn(server.base_url, probe_above_mb=1) as adapter:
            result = await adapter.push_files([part], idempotency_key="k")
        assert result.status == 200 and len(emulator.uploads) == 1


async def test_an_upload_cut_off_without_an_answer_asks_whether_it_was_the_token(
    tmp_path: Path,
) -> None:
    refused = {"n": 0}

    def handler(request: RawRequest, connection: socket.socket) -> None:
        if request.path == "/client-files":
            connection.shutdown(socket.SHUT_RDWR)  # no answer at all (as a TLS upload sees it)
            return
        refused["n"] += 1
        answer(connection, 401, UNAUTHORIZED)

    part = upload_file(tmp_path, 1)
    with RawProvider(handler, read_body=False) as server:
        async with churn(server.base_url, probe_above_mb=8) as adapter:
            with pytest.raises(AuthError, match="after an upload cut off"):
                await adapter.push_files([part], idempotency_key="k")
    assert refused["n"] == 1


async def test_an_upload_cut_off_with_a_good_token_stays_a_failure_to_reach(
    tmp_path: Path,
) -> None:
    def handler(request: RawRequest, connection: socket.socket) -> None:
        if request.path == "/client-files":
            connection.shutdown(socket.SHUT_RDWR)
            return
        answer(connection, 200, "http://127.0.0.1/log")

    part = upload_file(tmp_path, 1)
    with RawProvider(handler, read_body=False) as server:
        async with churn(server.base_url, probe_above_mb=8) as adapter:
            with pytest.raises(ProviderUnavailable):
                await adapter.push_files([part], idempotency_key="k")


async def test_a_refusal_of_the_upload_itself_is_still_its_own(tmp_path: Path) -> None:
    # Answered early with a 400: a refusal of the upload (its files are looked at), not a
    # failure to reach the tool.
    part = upload_file(tmp_path, 2)
    with early(400, {"statusCode": 400, "message": "bad form"}) as server:
        async with churn(server.base_url, probe_above_mb=8) as adapter:
            with pytest.raises(PermanentError, match="bad form"):
                await adapter.push_files([part], idempotency_key="k")


async def test_a_success_answered_before_the_upload_was_read_is_not_a_delivery(
    tmp_path: Path,
) -> None:
    # A 200 before the files arrived cannot say they were taken: the records stay queued.
    draining = Draining(200, {"statusCode": 200, "message": "Files Uploaded Successfully"})
    part = upload_file(tmp_path, 16)
    with RawProvider(draining, read_body=False) as server:
        async with churn(server.base_url, probe_above_mb=64) as adapter:
            with pytest.raises(UnexpectedAnswer, match="before the request was sent whole"):
                await adapter.push_files([part], idempotency_key="k")
