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

Framing (``BoundedConnection``, the protocol's h11 connection):

* a request head over ``MAX_HEAD`` (16 KB) is refused (400, closed) however it arrives:
  h11 bounds only a head still incomplete (``h11_max_incomplete_event_size``), not one
  that came whole in one read; so are more than ``MAX_HEADERS`` header lines;
* a request with both ``Content-Length`` and ``Transfer-Encoding`` is answered 400 and
  the connection closed (RFC 9112 section 6.3: a smuggling attempt; nothing after it on
  the connection is read as a request).

After a final answer to a request whose body was not read to its end (a 413, a 408, a
route that does not read bodies), the connection is closed: its body is not read on.
Closing is *lingering*: our side is shut at once (the client reads the answer, then
EOF), what the client still sends is read and dropped for at most ``LINGER_S`` or
``LINGER_BYTES``, then the socket is closed (closing with unread data at once would
reset the connection, and the client could lose the answer).

Bodies are bounded by the application (``daemon.inbound.listener``). Refused requests are logged
as ``listener_request_refused``, summarised (``daemon.inbound.log_repeats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import time
from typing import Any

import anyio
import h11
import structlog
import uvicorn
from anyio.abc import SocketAttribute
from uvicorn.protocols.http.h11_impl import H11Protocol

from .log_repeats import Repeats

log = structlog.get_logger(__name__)

MAX_HEAD = 16 << 10
MAX_HEADERS = 100
LINGER_S = 1.0
LINGER_BYTES = 1 << 20
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
        # Connections whose answer is sent, closing (their client's bytes dropped), oldest first.
        self.lingering: dict[GuardedProtocol, None] = {}
        self.closed = 0  # connections closed as slow or evicted since the last log line
        self.logged_at = 0.0
        self.repeats = Repeats(log)

    def refused(self, reason: str) -> None:
        """Log a request refused by the protocol (summarised: a flood is a count)."""
        self.repeats.warning("listener_request_refused", reason, status=400, reason=reason)

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


_HEAD_END = re.compile(b"\n\r?\n")  # h11's end of a head (a bare LF is taken too)


class BoundedConnection(h11.Connection):
    """h11's server connection with the listener's framing rules (the module's docstring);
    a request that breaks one raises ``h11.RemoteProtocolError``, as h11's own do, and
    ``refusal`` keeps the reason of the last one."""

    refusal: str | None = None

    def next_event(self) -> Any:
        """The next event, or ``RemoteProtocolError`` for a request the listener refuses."""
        try:
            if self.their_state is h11.IDLE:
                self._check_head()
            event = super().next_event()
            if isinstance(event, h11.Request):
                names = {name for name, _ in event.headers}
                if b"content-length" in names and b"transfer-encoding" in names:
                    raise h11.RemoteProtocolError(
                        "Content-Length with Transfer-Encoding", error_status_hint=400
                    )
            return event
        except h11.RemoteProtocolError as exc:
            self.refusal = str(exc)
            raise

    def _check_head(self) -> None:
        # h11 parses a whole head of any size that is in its buffer: measure it first.
        data, _ = self.trailing_data
        end = _HEAD_END.search(data, 0, MAX_HEAD)
        if end is None:
            if len(data) > MAX_HEAD:
                raise h11.RemoteProtocolError(
                    f"request head over {MAX_HEAD >> 10} KB", error_status_hint=431
                )
        elif data.count(b"\n", 0, end.end()) - 2 > MAX_HEADERS:
            raise h11.RemoteProtocolError(
                f"more than {MAX_HEADERS} header lines", error_status_hint=431
            )


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline, eviction of slow connections, the
    listener's framing rules and closing after an answer to a request not read whole."""

    guard: _Guard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounded = BoundedConnection(
            h11.SERVER, self.config.h11_max_incomplete_event_size or MAX_HEAD
        )
        self.conn = self.bounded
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_left = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; past the cap, close a closing one, else the one that has
        been receiving its request longest (or, when every open connection is being
        answered, this one)."""
        super().connection_made(transport)
        if len(self.connections) > self.guard.max_open:
            closing = next(iter(self.guard.lingering), None)
            if closing is not None:
                closing._linger_end()
            else:
                oldest = next(iter(self.guard.receiving), None)
                if oldest is None:
                    self.guard.note_closed("every connection is being answered")
                    self._close(_FULL_503)
                    return
                oldest._close(_TIMEOUT_408 if oldest._head_timer is not None else b"")
                self.guard.note_closed("more connections than max_connections")
        self._await_request()

    def data_received(self, data: bytes) -> None:
        """Feed h11; the deadline is off once the head is in, eviction once the request is.
        A closing connection's bytes are dropped (at most ``LINGER_BYTES``)."""
        if self._linger_timer is not None:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._linger_end()
            return
        super().data_received(data)
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._stop_head_timer()
        if state is not h11.IDLE and state is not h11.SEND_BODY:
            self.guard.receiving.pop(self, None)

    def on_response_complete(self) -> None:
        """After a response, a kept-alive connection waits for its next request: deadline on.
        If the request's body was not read to its end, the connection is closed instead."""
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.server_state.total_requests += 1
            self._linger()
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_request()

    def shutdown(self) -> None:
        """The server stops: a closing connection is closed now."""
        if self._linger_timer is not None:
            self._linger_end()
            return
        super().shutdown()

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

    def send_400_response(self, msg: str) -> None:
        """A request h11 or ``BoundedConnection`` refuses: 400 with the reason, then closed.
        (uvicorn's own logs only "Invalid HTTP request received." and closes at once.)"""
        reason = self.bounded.refusal or msg
        self.bounded.refusal = None
        self.guard.refused(reason)
        if self.cycle is not None and not self.cycle.response_complete:
            # A request being answered: this 400 is its answer; the application's is dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.transport.is_closing():
            return
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._forget()
            self.transport.close()  # an answer is being sent already: no second one
            return
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        body = reason.encode("ascii", "replace")
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self._linger()

    def _forget(self) -> None:
        self._stop_head_timer()
        self.guard.receiving.pop(self, None)
        self.guard.lingering.pop(self, None)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        self.guard.note_closed("no whole request head within request_timeout_s")
        self._close(_TIMEOUT_408)

    def _close(self, answer: bytes) -> None:
        """Close with ``answer`` (lingering), or at once without one."""
        if self.transport.is_closing():
            self._forget()
            return
        if answer:
            self.transport.write(answer)
            self._linger()
        else:
            self._forget()
            self.transport.close()

    def _linger(self) -> None:
        """Shut our side (the client reads what was sent, then EOF); drop what the client
        still sends for at most ``LINGER_S`` or ``LINGER_BYTES``, then close."""
        self._forget()
        if self.transport.is_closing():
            return
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._linger_left = LINGER_BYTES
        self._linger_timer = self.loop.call_later(LINGER_S, self._linger_end)
        self.guard.lingering[self] = None
        self.flow.resume_reading()  # uvicorn pauses reading while a body waits to be read

    def _linger_end(self) -> None:
        self._forget()
        self.transport.close()


def guarded_protocol(head_timeout_s: float, max_open: int) -> type[GuardedProtocol]:
    """A protocol class for one server (the guard is shared by its connections only)."""
    return type("ListenerProtocol", (GuardedProtocol,), {"guard": _Guard(head_timeout_s, max_open)})


class _ToStructlog(logging.Handler):
    """uvicorn's own log records (protocol errors, an application's exception) as JSON
    events: an exception with its type and traceback (``listener_error``), anything else
    as ``listener_http``, repeats summarised."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.repeats = Repeats(log)

    def emit(self, record: logging.LogRecord) -> None:
        """Log the record."""
        message = record.getMessage()
        if message == _UVICORN_400:
            return  # the protocol logs it with the reason (listener_request_refused)
        if record.exc_info is not None and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.repeats.error(
                "listener_error",
                type(exc).__name__,
                error=f"{type(exc).__name__}: {exc}",
                message=message.strip(),
                exc_info=record.exc_info,
            )
            return
        self.repeats.warning("listener_http", message, level_name=record.levelname, message=message)


# uvicorn's log line for a request h11 refuses (``GuardedProtocol.send_400_response`` logs
# its own, with the reason).
_UVICORN_400 = "Invalid HTTP request received."


def route_uvicorn_logs() -> _ToStructlog:
    """Send uvicorn's log records to structlog (one handler, returned: its repeats are
    flushed when the listener stops)."""
    handler = _ToStructlog()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    return handler
