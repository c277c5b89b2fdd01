"""Every request of every kind has one whole deadline and a cap on its answer, against a
provider on bare sockets: an answer trickled a byte at a time fails at ``timeout_s``; a body
without end or a gzip bomb stops at the kind's cap (counted inflated); an upload that stops
moving, or crawls, fails by its own rule; an answer that waited whole in the socket while
the event loop was held is used."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from dropsync.adapters.base import FilePart, OutgoingChange, change_idempotency_key
from dropsync.adapters.churn.adapter import ChurnProvider
from dropsync.adapters.churn.adapter import parse_options as churn_options
from dropsync.adapters.crm.adapter import CrmProvider
from dropsync.adapters.crm.adapter import parse_options as crm_options
from dropsync.adapters.errors import ProviderError, ProviderUnavailable
from dropsync.adapters.favourites.adapter import FavouritesProvider
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.options import OptionError
from dropsync.adapters.registrations import REQUESTS
from dropsync.adapters.registrations.adapter import build as build_registrations
from dropsync.adapters.registrations.adapter import parse_options as registration_options

from tests.raw_provider import (
    RawProvider,
    RawRequest,
    Sent,
    answer,
    endless,
    gzip_bomb,
    head,
    trickle,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MB = 1 << 20
TOKEN = "tok-deadline-4f1a9c"
PASSWORD = "pa55-w0rd-deadline"


@dataclass(frozen=True)
class Call:
    """One request of one kind: how to make it, the path it asks, its success answer, and
    the cap of that answer."""

    name: str
    path: str
    status: int
    body: bytes
    cap: int
    run: Callable[[str, float, Path], Awaitable[str | None]]  # (base_url, timeout_s, tmp): error


def contact() -> OutgoingChange:
    key = "guest@example.com"
    return OutgoingChange(
        1, "contacts", key, 1000, False, {"email": key}, change_idempotency_key("c", "c", key, 1)
    )


async def failure(work: Awaitable[object]) -> str | None:
    try:
        await work
    except ProviderError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def crm_push(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    options = crm_options({"account_id": "acc_1"})
    async with CrmProvider("crm", base_url, options, TOKEN, timeout_s, None) as crm:
        return await failure(crm.push([contact()], idempotency_key="k"))


def favourites(base_url: str, timeout_s: float) -> FavouritesProvider:
    return FavouritesProvider(
        "fav", base_url, favourite_options({}), {"alice": TOKEN}, timeout_s, None
    )


async def favourites_pull(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    async with favourites(base_url, timeout_s) as provider:
        return await failure(provider.pull(None))


async def favourites_push(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    item = {"user": "alice", "item": "s1", "action": "ADD"}
    change = OutgoingChange(1, "favourites", "alice:s1", 1_700_000_000_000, False, item, "k")
    async with favourites(base_url, timeout_s) as provider:
        return await failure(provider.push([change], idempotency_key="k"))


def registrations(base_url: str, timeout_s: float) -> Any:
    options = {"username": "bot", "event_id": "ev-1"}
    return build_registrations("reg", base_url, options, PASSWORD, timeout_s, None)


async def registrations_page(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    async with registrations(base_url, timeout_s) as provider:
        stream = next(s for s in provider.pull_streams() if s.name == "participants")

        async def pull() -> None:
            async for _ in provider.stream_pages(stream, None):
                pass

        return await failure(pull())


async def registrations_register(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    body = {"participantId": "p1", "sessionId": "s1", "action": "register"}
    change = OutgoingChange(1, REQUESTS, "q1", 1_700_000_000_001, False, body, "k")
    async with registrations(base_url, timeout_s) as provider:
        return await failure(provider.push([change], idempotency_key="k"))


def churn(base_url: str, timeout_s: float, **options: Any) -> ChurnProvider:
    # No check of the token before an upload: these servers take one connection, the upload's.
    parsed = churn_options({"brand_id": 15, "probe_above_mb": 1024, **options})
    return ChurnProvider("churn", base_url, parsed, TOKEN, timeout_s, None)


def spool_file(tmp: Path, size: int = 0) -> FilePart:
    path = tmp / "users-0001.json"
    document = orjson.dumps({"data": {"id": 1}, "createdAt": 1, "updatedAt": 1})
    path.write_bytes(b"[" + document + b"]" + b" " * max(0, size - len(document) - 2))
    return FilePart(path, {"brandId": 15, "tableName": "users"}, 1, path.stat().st_size)


async def churn_upload(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    async with churn(base_url, timeout_s) as provider:
        return await failure(provider.push_files([spool_file(tmp)], idempotency_key="k"))


async def churn_log_url(base_url: str, timeout_s: float, tmp: Path) -> str | None:
    async with churn(base_url, timeout_s) as provider:
        _, _, error = await provider.fetch_integration_errors()
        return error


CALLS = [
    Call("crm", "/account/acc_1/sync_data", 201, b'{"status":"queued","_id":"j1"}', MB, crm_push),
    Call("favourites pull", "/getUserFavorites", 200, b"[]", 8 * MB, favourites_pull),
    Call("favourites push", "/postUserFavorites", 200, b"{}", MB, favourites_push),
    Call(
        "registrations page",
        "/api/v1/events/ev-1/participants",
        200,
        b'{"items": [], "total": 0}',
        8 * MB,
        registrations_page,
    ),
    Call(
        "registrations request",
        "/api/v1/events/ev-1/registrations",
        201,
        b'{"id": "r1", "status": "Registered"}',
        MB,
        registrations_register,
    ),
    Call(
        "churn upload",
        "/client-files",
        200,
        b'{"statusCode": 200, "message": "ok"}',
        MB,
        churn_upload,
    ),
    Call(
        "churn error-log url",
        "/client-data/integration-errors",
        200,
        b'{"url": "BASE/log"}',
        MB,
        churn_log_url,
    ),
    Call("churn error log", "/log", 200, b"a line of the log", 5 * MB, churn_log_url),
]
IDS = [call.name for call in CALLS]


class Provider:
    """A raw provider answering ``call.path`` with ``trick`` (when set) and every other
    request (a login, the error log's URL) as a provider would."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.trick: Callable[[RawRequest, socket.socket], None] | None = None
        self.stop = threading.Event()
        self.raw = RawProvider(self.handle)

    def handle(self, request: RawRequest, connection: socket.socket) -> None:
        path = request.path.split("?", 1)[0]
        if path == self.call.path and self.trick is not None:
            self.trick(request, connection)
        elif path == "/api/v1/login":
            answer(connection, 200, {"token": "session-token-0a1b2c3d", "expiresIn": 3600})
        elif path == "/client-data/integration-errors":
            answer(connection, 200, {"url": f"{self.raw.base_url}/log"})
        else:
            answer(connection, self.call.status, self.success())

    def success(self) -> bytes:
        return self.call.body.replace(b"BASE", self.raw.base_url.encode())


@pytest.fixture(params=CALLS, ids=IDS)
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    served = Provider(request.param)
    yield served
    served.stop.set()
    served.raw.close()


@pytest.mark.parametrize("part", ["body", "head"])
async def test_an_answer_trickled_a_byte_at_a_time_fails_at_the_deadline(
    provider: Provider, tmp_path: Path, part: str
) -> None:
    """One byte every 0.1 s of a success answer 60 bytes long: whole after 6 s, past
    timeout_s = 1. The same adapter then works with a provider that answers at once."""
    call = provider.call
    body = provider.success().ljust(60)

    def slow(request: RawRequest, connection: socket.socket) -> None:
        whole = head(call.status, {"Content-Type": "application/json"}, length=len(body))
        if part == "body":
            connection.sendall(whole)
            trickle(connection, body, 0.1, provider.stop)
        else:
            trickle(connection, whole + body, 0.1, provider.stop)

    provider.trick = slow
    error = await call.run(provider.raw.base_url, 1.0, tmp_path)
    assert error is not None and "timeout_s = 1 s" in error, error
    if call.run is not churn_log_url:
        assert error.startswith("ProviderUnavailable")
    provider.trick = None
    assert await call.run(provider.raw.base_url, 1.0, tmp_path) is None


async def test_a_body_without_end_is_read_up_to_the_kinds_cap(
    provider: Provider, tmp_path: Path
) -> None:
    """A success head announcing 128 MB, then zeros as fast as they are taken: the request
    fails once the kind's cap is passed, having taken little more than the cap."""
    call = provider.call
    sent = Sent()

    def huge(request: RawRequest, connection: socket.socket) -> None:
        endless(connection, head(call.status, length=128 * MB), sent, total=128 * MB)

    provider.trick = huge
    error = await call.run(provider.raw.base_url, 30.0, tmp_path)
    assert error is not None and f"larger than {call.cap} bytes" in error, error
    assert sent.closed.wait(30)
    assert sent.count < call.cap + 16 * MB  # the rest of what was taken: socket buffers


async def test_a_gzip_bomb_stops_at_the_cap_before_it_inflates(
    provider: Provider, tmp_path: Path
) -> None:
    """A success answer of 256 KB of gzip that inflates to 256 MB: never more than the cap
    (and a chunk) is inflated."""
    call = provider.call
    bomb = gzip_bomb(256 * MB)

    def bombing(request: RawRequest, connection: socket.socket) -> None:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        connection.sendall(head(call.status, headers, length=len(bomb)) + bomb)

    provider.trick = bombing
    tracemalloc.start()
    try:
        error = await call.run(provider.raw.base_url, 30.0, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error is not None and f"larger than {call.cap} bytes" in error, error
    assert peak < 2 * call.cap + 4 * MB, f"{peak / MB:.1f} MB at peak"


@pytest.fixture
def raw_stop() -> Iterator[threading.Event]:
    stop = threading.Event()
    yield stop
    stop.set()


async def test_an_answer_waiting_while_the_event_loop_was_held_is_used(
    raw_stop: threading.Event,
) -> None:
    """The loop is held (as by a SIGSTOP) for 3 s with timeout_s = 1, while the provider
    answers at once: the answer is read when the loop runs again, and the batch is taken."""
    arrived, held = threading.Event(), threading.Event()

    def answer_while_held(request: RawRequest, connection: socket.socket) -> None:
        arrived.set()
        held.wait(30)
        answer(connection, 201, {"status": "queued", "_id": "job-1"})

    with RawProvider(answer_while_held) as raw:
        options = crm_options({"account_id": "acc_1"})
        async with CrmProvider("crm", raw.base_url, options, TOKEN, 1.0, None) as crm:
            results: list[object] = []

            async def push() -> None:
                results.append(await crm.push([contact()], idempotency_key="k"))

            async with anyio.create_task_group() as group:
                group.start_soon(push)
                await anyio.to_thread.run_sync(arrived.wait)
                held.set()
                time.sleep(3)  # noqa: ASYNC251 -- holds the event loop, as a SIGSTOP would
        assert len(raw.arrived("/account")) == 1
    [result] = results
    assert getattr(result, "remote_ref", None) == "job-1"


async def test_an_upload_whose_body_stops_moving_fails_at_timeout_s(
    raw_stop: threading.Event, tmp_path: Path
) -> None:
    """The provider takes the head of a 64 MB upload, then reads nothing more."""
    part = spool_file(tmp_path, 64 * MB)

    def stalls(connection: socket.socket) -> None:
        connection.recv(65536)
        raw_stop.wait(60)

    with StallingServer(stalls) as server:
        async with churn(server.base_url, 1.0) as provider:
            with pytest.raises(ProviderUnavailable) as raised:
                await provider.push_files([part], idempotency_key="k")
    assert "the body did not move for timeout_s = 1 s" in str(raised.value)
    assert part.path not in open_files()  # the failed upload let go of its file


def open_files() -> set[Path]:
    """The files this process has open."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            found.add(Path(fd.readlink()))
    return found


async def test_an_upload_taken_slower_than_the_minimum_rate_fails(
    raw_stop: threading.Event, tmp_path: Path
) -> None:
    """With min_upload_kb_s = 4096, a 32 MB upload may take timeout_s + 8 s; the provider
    reads it at about 1.5 MB/s, steadily (so the body never stops moving for timeout_s)."""
    part = spool_file(tmp_path, 32 * MB)

    def crawls(connection: socket.socket) -> None:
        while not raw_stop.is_set() and connection.recv(65536):
            time.sleep(0.04)

    with StallingServer(crawls) as server:
        async with churn(server.base_url, 2.0, min_upload_kb_s=4096) as provider:
            with pytest.raises(ProviderUnavailable) as raised:
                await provider.push_files([part], idempotency_key="k")
    assert "min_upload_kb_s = 4096" in str(raised.value), raised.value


class StallingServer:
    """A server whose ``reader`` gets each connection from its first byte (the request is
    never read by this class, so the reader decides how fast it is taken)."""

    def __init__(self, reader: Callable[[socket.socket], None]) -> None:
        self.reader = reader
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection, contextlib.suppress(OSError):
            self.reader(connection)

    def __enter__(self) -> StallingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("parse", "key"),
    [
        (favourite_options, "max_list_mb"),
        (lambda o: registration_options({"username": "u", "event_id": "e", **o}), "max_page_mb"),
        (lambda o: churn_options({"brand_id": 1, **o}), "min_upload_kb_s"),
    ],
)
@pytest.mark.parametrize("value", [0, -1, 1e300, "8", True, 1 << 40])
def test_the_caps_and_the_upload_rate_are_checked_by_key(
    parse: Callable[[dict[str, Any]], object], key: str, value: object
) -> None:
    with pytest.raises(OptionError) as refused:
        parse({key: value})
    assert refused.value.key == key


def deflated(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "wbits"),
    [("gzip", zlib.MAX_WBITS | 16), ("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS)],
    ids=["gzip", "deflate", "raw deflate"],
)
async def test_a_compressed_answer_within_the_cap_is_read(encoding: str, wbits: int) -> None:
    """The encodings the requests ask for: a 201 in gzip, zlib-wrapped or raw deflate is read;
    a 503 in gzip says what it holds."""
    job = orjson.dumps({"status": "queued", "_id": "job-gz", "pad": "x" * 5000})
    error = orjson.dumps({"error": "maintenance until noon"})

    def compressed(request: RawRequest, connection: socket.socket) -> None:
        status, body = (201, job) if len(raw.requests) == 1 else (503, error)
        packed = deflated(body, wbits)
        headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
        connection.sendall(head(status, headers, length=len(packed)) + packed)

    with RawProvider(compressed) as raw:
        options = crm_options({"account_id": "acc_1"})
        async with CrmProvider("crm", raw.base_url, options, TOKEN, 5.0, None) as crm:
            result = await crm.push([contact()], idempotency_key="k")
            assert result.remote_ref == "job-gz"
            with pytest.raises(ProviderError) as raised:
                await crm.push([contact()], idempotency_key="k2")
        assert raw.requests[0].headers["accept-encoding"] == "gzip, deflate"
    assert "maintenance until noon" in str(raised.value)


@pytest.mark.parametrize(
    ("encoding", "body", "said"),
    [
        ("br", b"\x1b\x00", "content encoding 'br', which was not asked for"),
        ("gzip, gzip", b"\x1f\x8b", "content encoding 'gzip, gzip'"),
        ("gzip", b"not gzip at all", "the gzip body is broken"),
        (
            "gzip",
            gzip.compress(b'{"status": "queued", "_id": "j"}', mtime=0)[:-12],
            "ends before its end",
        ),
    ],
)
async def test_a_success_in_an_encoding_not_asked_for_or_broken_is_unexpected(
    encoding: str, body: bytes, said: str
) -> None:
    def odd(request: RawRequest, connection: socket.socket) -> None:
        headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
        connection.sendall(head(201, headers, length=len(body)) + body)

    with RawProvider(odd) as raw:
        error = await crm_push(raw.base_url, 5.0, Path())
    assert error is not None and error.startswith("UnexpectedAnswer") and said in error, error


async def test_an_upload_held_up_by_a_pause_goes_on(
    raw_stop: threading.Event, tmp_path: Path
) -> None:
    """The event loop is held for 3 s (timeout_s = 1) in the middle of a 32 MB upload: the
    pause is not the provider's, so the body goes on moving afterwards and is taken."""
    part = spool_file(tmp_path, 32 * MB)
    halfway = threading.Event()

    def reads_all(connection: socket.socket) -> None:
        data = bytearray()
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        length = int(
            next(
                line.split(b":")[1]
                for line in data.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        taken = len(data.partition(b"\r\n\r\n")[2])
        while taken < length:
            taken += len(connection.recv(1 << 20))
            if taken > 8 * MB:
                halfway.set()
        answer(connection, 200, {"statusCode": 200, "message": "ok"})

    with StallingServer(reads_all) as server:
        async with churn(server.base_url, 1.0) as provider, anyio.create_task_group() as group:
            results: list[object] = []

            async def upload() -> None:
                results.append(await provider.push_files([part], idempotency_key="k"))

            group.start_soon(upload)
            await anyio.to_thread.run_sync(halfway.wait)
            time.sleep(3)  # noqa: ASYNC251 -- holds the event loop, as a SIGSTOP would
    [result] = results
    assert getattr(result, "status", None) == 200
