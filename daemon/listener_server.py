"""The listener's HTTP server: uvicorn on the daemon's own loop, on sockets bound here.

Binding: the listening sockets are bound before uvicorn starts, so that an address
that cannot be had (``in use`` by another program, not an address of this machine,
a privileged port) is an ``OSError`` the caller turns into a pause with retries,
instead of uvicorn's ``sys.exit``. ``bind_problem`` says what went wrong in words an
operator can act on.

Slow clients: uvicorn has no deadline for reading a request's head, and its
``limit_concurrency`` counts open connections, so a client that opens connections
and sends their heads a byte at a time would get every other request answered 503,
for as long as it likes. ``guarded_protocol`` is uvicorn's h11 protocol with:

* a deadline for the head: a connection must send a whole request head within
  ``head_timeout_s`` of opening (or of its previous response, on keep-alive); else
  it gets a 408 and is closed, whatever trickles in meanwhile;
* a cap on open connections (``max_open``): a new connection past it closes the
  connection that has waited longest for its head (a slow client's, never one
  whose request is being served); only when every open connection is serving a
  request is the new one answered 503.

Heads over 16 KB are refused by h11 (``h11_max_incomplete_event_size``), bodies are
bounded by the application (``daemon.listener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from typing import Any

import anyio
import h11
import structlog
import uvicorn
from anyio.abc import SocketAttribute
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger(__name__)

MAX_HEAD = 16 << 10
KEEP_ALIVE_S = 5
_CLOSED_LOG_EVERY_S = 60.0
_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_FULL_503 = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon's task group owns the signals."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return

    def capture_signals(self) -> Any:  # uvicorn >= 0.29
        return contextlib.nullcontext()

    def close_all(self, sockets: list[socket.socket]) -> None:
        """Stop listening and drop every open connection (after a cancellation)."""
        for server in getattr(self, "servers", []):
            server.close()
        for sock in sockets:
            sock.close()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


async def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (every address the name resolves to); OSError
    (``socket.gaierror`` included) when the address cannot be had."""
    multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
    return [listener.extra(SocketAttribute.raw_socket) for listener in multi.listeners]


def bind_problem(exc: OSError) -> tuple[str, str]:
    """(condition, reason) for an address that cannot be had, for ``status`` and the log."""
    if isinstance(exc, socket.gaierror):
        return "address unavailable", f"the host name does not resolve ({exc.strerror or exc})"
    if exc.errno == errno.EADDRINUSE:
        return "address in use", "in use by another program"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address unavailable", "not an address of this machine (or its network is not up)"
    if exc.errno == errno.EACCES:
        return "address unavailable", "not allowed (a port under 1024 needs privileges)"
    return "address unavailable", exc.strerror or str(exc)


class _Guard:
    """The state the connections of one server share: who waits for a head, since when."""

    def __init__(self, head_timeout_s: float, max_open: int) -> None:
        self.head_timeout_s = head_timeout_s
        self.max_open = max_open
        self.waiting: dict[GuardedProtocol, None] = {}  # insertion order: oldest first
        self.closed = 0  # connections closed as slow or evicted since the last log line
        self.logged_at = 0.0

    def note_closed(self, why: str) -> None:
        """Count a slow connection closed; log the count at most once a minute."""
        self.closed += 1
        now = time.monotonic()
        if self.logged_at == 0.0 or now - self.logged_at >= _CLOSED_LOG_EVERY_S:
            log.warning(
                "listener_slow_clients_closed",
                connections=self.closed,
                reason=why,
                head_timeout_s=self.head_timeout_s,
                max_connections=self.max_open,
            )
            self.closed = 0
            self.logged_at = now


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and eviction of slow connections."""

    guard: _Guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; past the cap, close the one that waited longest for a head."""
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.guard.max_open:
            oldest = next(iter(self.guard.waiting), None)
            if oldest is None:
                self.guard.note_closed("every connection is serving a request")
                self._refuse(_FULL_503)
                return
            oldest._refuse(_TIMEOUT_408)
            self.guard.note_closed("more connections than max_connections")
        self._await_head()

    def data_received(self, data: bytes) -> None:
        """Feed h11; once a whole head has arrived, the deadline is off."""
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_arrived()

    def on_response_complete(self) -> None:
        """After a response, a kept-alive connection has the deadline again for its next head."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._head_arrived()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.head_timeout_s, self._head_late)
            self.guard.waiting[self] = None

    def _head_arrived(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        self.guard.waiting.pop(self, None)

    def _head_late(self) -> None:
        self._head_timer = None
        self.guard.note_closed("no whole request head within request_timeout_s")
        self._refuse(_TIMEOUT_408)

    def _refuse(self, answer: bytes) -> None:
        self._head_arrived()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


def guarded_protocol(head_timeout_s: float, max_open: int) -> type[GuardedProtocol]:
    """A protocol class for one server (the guard is shared by its connections only)."""
    return type("ListenerProtocol", (GuardedProtocol,), {"guard": _Guard(head_timeout_s, max_open)})
