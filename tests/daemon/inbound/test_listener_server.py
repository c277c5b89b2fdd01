"""The listener's HTTP framing over raw sockets on loopback: the exact bytes of a request
that never ends, of a smuggling attempt, of oversized heads. Each connection must get at
most one answer and then be closed (the client reads EOF), and nothing more is read from
it."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from dropsync.adapters.emulators.common import EmulatorServer

from tests.churn_support import churn_config, listener_emulator, running

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]

# Bounds a hang only: every case below is closed by the listener long before.
LIMIT_S = 30.0
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@pytest.fixture
def emulator(port: int) -> Iterator[EmulatorServer]:
    with EmulatorServer(listener_emulator(port)) as server:
        yield server


@dataclass
class Exchange:
    """What one raw connection saw."""

    received: bytes
    eof: bool  # the listener closed its side (recv returned b"")
    send_refused: bool  # a later send failed: the listener no longer reads this connection

    @property
    def statuses(self) -> list[int]:
        """The status of every response received, in order."""
        return [int(m.group(1)) for m in STATUS_LINE.finditer(self.received)]


def exchange(
    port: int,
    first: bytes,
    more: Iterator[bytes] | None = None,
    *,
    trickle: bool = False,
    pause_s: float = 0.0,
    until_refused: bool = False,
) -> Exchange:
    """Send ``first`` (a byte at a time when ``trickle``), then each of ``more`` (every
    ``pause_s``) while reading, until the listener closes the connection (and, with
    ``until_refused``, until a send fails too); blocking, for a worker thread."""
    received = b""
    eof = refused = False
    deadline = time.monotonic() + LIMIT_S
    pieces = iter([bytes([b]) for b in first]) if trickle else iter([first])
    sends = [pieces] if more is None else [pieces, more]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.05)
        while time.monotonic() < deadline and not (eof and (refused or not until_refused)):
            if not eof:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    chunk = None
                except ConnectionResetError:  # closed, but not cleanly: eof stays False
                    refused = True
                    break
                eof = chunk == b""
                received += chunk or b""
            while sends and not refused:
                piece = next(sends[0], None)
                if piece is None:
                    sends.pop(0)
                    continue
                try:
                    sock.sendall(piece)
                except OSError:  # EPIPE, ECONNRESET: the listener has closed it
                    refused = True
                break
            if pause_s:
                time.sleep(pause_s)
    return Exchange(received, eof, refused)


async def talk(port: int, first: bytes, **options: object) -> Exchange:
    """``exchange`` in a worker thread (the listener runs on this loop)."""
    return await anyio.to_thread.run_sync(lambda: exchange(port, first, **options))  # type: ignore[arg-type]


def endless_chunks(size: int = 64 << 10) -> Iterator[bytes]:
    """A chunked body that never ends."""
    chunk = b"%x\r\n" % size + b"x" * size + b"\r\n"
    while True:
        yield chunk


async def healthy(url: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url + "/healthz")).status_code == 200


async def test_an_endless_chunked_body_is_answered_413_and_the_connection_closed(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    head = (
        b"POST /callbacks/churn/brand HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    async with running(config, port) as daemon:
        seen = await talk(port, head, more=endless_chunks(), until_refused=True)
        assert seen.statuses == [413]
        assert seen.eof and seen.send_refused
        assert await healthy(daemon.url)


@pytest.mark.parametrize(
    "path", ["/healthz", "/metrics", "/callbacks/churn/nowhere", "/callbacks/churn/brand/nobody"]
)
async def test_an_answer_before_the_body_is_read_closes_the_connection(
    tmp_path: Path, port: int, emulator: EmulatorServer, path: str
) -> None:
    """Routes that answer without reading the body (or no route at all): the body that
    follows is not read, the connection is closed after the answer."""
    config = churn_config(tmp_path, emulator.base_url, port)
    method = b"GET" if path in ("/healthz", "/metrics") else b"POST"
    head = method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    async with running(config, port) as daemon:
        seen = await talk(
            port,
            head + b"Transfer-Encoding: chunked\r\n\r\n",
            more=endless_chunks(),
            until_refused=True,
        )
        assert len(seen.statuses) == 1, seen.received[:300]
        assert seen.eof and seen.send_refused
        # The same with a Content-Length larger than what is sent.
        seen = await talk(port, head + b"Content-Length: 100000\r\n\r\n{")
        assert len(seen.statuses) == 1 and seen.eof
        assert await healthy(daemon.url)


async def test_request_timeout_holds_for_a_trickling_chunked_body(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, extra={"listener": {"request_timeout_s": 0.5}}
    )
    head = b"POST /callbacks/churn/brand HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with running(config, port) as daemon:
        seen = await talk(
            port, head, more=iter([b"1\r\n{\r\n"] + [b"1\r\n \r\n"] * 10_000), pause_s=0.02
        )
        assert seen.statuses == [408]
        assert seen.eof
        assert await healthy(daemon.url)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    ],
)
@pytest.mark.parametrize("target", [b"POST /callbacks/churn/brand", b"GET /healthz"])
async def test_content_length_with_transfer_encoding_is_answered_400_and_closed(
    tmp_path: Path, port: int, emulator: EmulatorServer, framing: bytes, target: bytes
) -> None:
    """RFC 9112 section 6.3: the request smuggled after the chunked body's end is never
    answered."""
    config = churn_config(tmp_path, emulator.base_url, port)
    smuggled = b"0\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    async with running(config, port) as daemon:
        seen = await talk(port, target + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + smuggled)
        assert seen.statuses == [400], seen.received[:300]
        assert seen.eof
        assert b"dropsync_" not in seen.received
        assert await healthy(daemon.url)


def pad_head(size: int, extra: bytes = b"") -> bytes:
    """A GET /healthz head with ``extra`` header lines and a header of ``size`` bytes."""
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra + b"X-Pad: " + b"a" * size + b"\r\n\r\n"


HEADS = {
    "20 KB in one write": pad_head(20 << 10),
    "10,000 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 10_000 + b"\r\n",
    "10,000 tiny headers, bare LF": b"GET /healthz HTTP/1.1\nHost: x\n" + b"a:\n" * 10_000 + b"\n",
    "padding inside the white space": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A:"
    + b" " * (20 << 10)
    + b"1\r\n\r\n",
    "one byte over": pad_head((16 << 10) - len(pad_head(0)) + 1),
}


@pytest.mark.parametrize("name", list(HEADS))
async def test_a_head_over_16_kb_in_one_write_is_refused_and_closed(
    tmp_path: Path, port: int, emulator: EmulatorServer, name: str
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    async with running(config, port) as daemon:
        seen = await talk(port, HEADS[name])
        assert len(seen.statuses) == 1 and seen.statuses[0] in (400, 431), seen.received[:300]
        assert seen.eof
        assert await healthy(daemon.url)


async def test_a_head_of_16_kb_is_taken(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    close = b"Connection: close\r\n"
    head = pad_head((16 << 10) - len(pad_head(0, close)), close)
    assert len(head) == 16 << 10
    async with running(config, port):
        seen = await talk(port, head)
        assert seen.statuses == [200] and seen.eof


async def test_a_pipelined_head_over_16_kb_is_refused_after_the_first_answer(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(tmp_path, emulator.base_url, port)
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    async with running(config, port):
        seen = await talk(port, first + HEADS["20 KB in one write"])
        assert seen.statuses[0] == 200
        assert seen.statuses[1:] in ([400], [431]), seen.received[-300:]
        assert seen.eof


async def test_a_head_trickled_a_byte_at_a_time_gets_one_answer_and_is_closed(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    config = churn_config(
        tmp_path, emulator.base_url, port, extra={"listener": {"request_timeout_s": 0.3}}
    )
    async with running(config, port) as daemon:
        seen = await talk(port, pad_head(100_000), trickle=True)
        assert len(seen.statuses) == 1 and seen.statuses[0] in (400, 408, 431)
        assert seen.eof
        assert await healthy(daemon.url)


async def test_connections_closing_after_their_answer_make_room_for_new_ones(
    tmp_path: Path, port: int, emulator: EmulatorServer
) -> None:
    """At max_connections, a connection whose answer is sent and that is closing (its
    client still sending) is closed for a new one, which is answered, not refused 503."""
    config = churn_config(
        tmp_path, emulator.base_url, port, extra={"listener": {"max_connections": 2}}
    )
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with running(config, port) as daemon:
        closing = []
        for _ in range(2):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(head + b"1\r\nx\r\n")
            answer = b""
            with anyio.fail_after(LIMIT_S):
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive()
            assert answer.startswith(b"HTTP/1.1 200")
            closing.append(stream)
        seen = await talk(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert seen.statuses == [200] and seen.eof
        for stream in closing:
            await stream.aclose()
        assert await healthy(daemon.url)
