"""A minimal HTTP sink that answers the CRM's success shape, for ``bench/flush.py``.

The CRM emulator (``dropsync emulate``) checks and keeps every contact, about 19,000 a
second on this machine: a bench against it measures the emulator. This server does the
least an HTTP/1.1 server can (raw asyncio, keep-alive, ``Content-Length`` bodies only)
and answers every ``POST /account/<token>/sync_data`` with the CRM's documented success,
``201 {"status":"queued","_id":"<token>-<n>"}``: the adapter's ``job_id`` accepts it.

It counts what it received (requests, bytes, and contacts: the occurrences of
``"email":`` in the bodies, one a contact in the bench's data), shown by
``GET /_sink/<token>/stats`` and cleared by ``POST /_sink/<token>/reset``.

``<token>`` is random, made by the bench: a server that answers on that path, and whose
job ids carry it, is the one the bench started, not another program that happens to
listen on the port. ``python -m bench.sink`` binds a free loopback port and prints one
line, ``PORT TOKEN``, once it listens; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys

CONTACT_MARK = b'"email":'


class Counts:
    """What the sink has received since the last reset."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.contacts = 0


class SinkProtocol(asyncio.Protocol):
    """One connection: requests parsed as they arrive, answered in order."""

    def __init__(self, token: str, counts: Counts) -> None:
        self.token = token
        self.counts = counts
        self.sync_path = f"/account/{token}/sync_data".encode()
        self.stats_path = f"/_sink/{token}/stats".encode()
        self.reset_path = f"/_sink/{token}/reset".encode()
        self.buffer = bytearray()
        self.head: tuple[bytes, bytes] | None = None  # method, path of the request being read
        self.length = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(self.buffer[:end]).split(b"\r\n")
                del self.buffer[: end + 4]
                method, path, _ = lines[0].split(b" ", 2)
                self.length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        self.length = int(value)
                self.head = (method, path)
            if len(self.buffer) < self.length:
                return
            body = self.buffer[: self.length]
            del self.buffer[: self.length]
            method, path = self.head
            self.head = None
            self.answer(method, path, body)

    def answer(self, method: bytes, path: bytes, body: bytearray) -> None:
        counts = self.counts
        if method == b"POST" and path == self.sync_path:
            counts.requests += 1
            counts.bytes += len(body)
            counts.contacts += body.count(CONTACT_MARK)
            reply = b'{"status":"queued","_id":"%s-%d"}' % (self.token.encode(), counts.requests)
            self.send(b"201 Created", reply)
        elif method == b"GET" and path == self.stats_path:
            stats = {
                "token": self.token,
                "requests": counts.requests,
                "bytes": counts.bytes,
                "contacts": counts.contacts,
                "pid": os.getpid(),
            }
            self.send(b"200 OK", json.dumps(stats).encode())
        elif method == b"POST" and path == self.reset_path:
            counts.requests = counts.bytes = counts.contacts = 0
            self.send(b"200 OK", b"{}")
        else:
            self.send(b"404 Not Found", b'{"error":"not found"}')

    def send(self, status: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )


async def serve(token: str) -> None:
    """Listen on a free loopback port, print ``PORT TOKEN``, serve until SIGTERM."""
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(token, counts), "127.0.0.1", 0, backlog=64
    )
    port = server.sockets[0].getsockname()[1]
    print(port, token, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """``python -m bench.sink [TOKEN]``: a new random token unless one is given."""
    token = sys.argv[1] if len(sys.argv) > 1 else secrets.token_hex(8)
    asyncio.run(serve(token))


if __name__ == "__main__":
    main()
