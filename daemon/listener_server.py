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
  connection that has been receiving its request longest (head or body: a slow
  client's, never one whose whole request is in and being answered); only when every
  open connection is being answered is the new one answered 503.

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
    """The state the connections of one server share: which are still receiving a request."""

    def __init__(self, head_timeout_s: float, max_open: int) -> None:
        self.head_timeout_s = head_timeout_s
        self.max_open = max_open
        # Connections that have not sent a whole request yet (head or body), oldest first.
        self.receiving: dict[GuardedProtocol, None] = {}
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
                request_timeout_s=self.head_timeout_s,
                max_connections=self.max_open,
            )
            self.closed = 0
            self.logged_at = now


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and eviction of slow connections."""

    guard: _Guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; past the cap, close the one that has been receiving its
        request longest (or, when every open connection is being answered, this one)."""
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.guard.max_open:
            oldest = next(iter(self.guard.receiving), None)
            if oldest is None:
                self.guard.note_closed("every connection is being answered")
                self._close(_FULL_503)
                return
            oldest._close(_TIMEOUT_408 if oldest._head_timer is not None else b"")
            self.guard.note_closed("more connections than max_connections")
        self._await_request()

    def data_received(self, data: bytes) -> None:
        """Feed h11; the deadline is off once the head is in, eviction once the request is."""
        super().data_received(data)
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._stop_head_timer()
        if state is not h11.IDLE and state is not h11.SEND_BODY:
            self.guard.receiving.pop(self, None)

    def on_response_complete(self) -> None:
        """After a response, a kept-alive connection waits for its next request: deadline on."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._forget()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.head_timeout_s, self._head_late)
        self.guard.receiving[self] = None

    def _stop_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _forget(self) -> None:
        self._stop_head_timer()
        self.guard.receiving.pop(self, None)

    def _head_late(self) -> None:
        self._head_timer = None
        self.guard.note_closed("no whole request head within request_timeout_s")
        self._close(_TIMEOUT_408)

    def _close(self, answer: bytes) -> None:
        self._forget()
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()


def guarded_protocol(head_timeout_s: float, max_open: int) -> type[GuardedProtocol]:
    """A protocol class for one server (the guard is shared by its connections only)."""
    return type("ListenerProtocol", (GuardedProtocol,), {"guard": _Guard(head_timeout_s, max_open)})
