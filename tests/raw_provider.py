"""A provider written on bare sockets, for answers no well-behaved server gives: a head or a body
trickled a byte at a time, a body without end, a gzip bomb, an answer written while the client
is stopped.

``RawProvider(handler)`` listens on 127.0.0.1; each request (head and ``Content-Length`` body
read whole) is passed with its connection to ``handler``, which writes what it likes and
returns; the connection is then closed. With ``read_body=False`` only the head is read (the
body is the handler's to read, or not: a server answering before the body and closing).
``requests`` lists what arrived.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

import orjson


@dataclass
class RawRequest:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Sent:
    """What a handler managed to write before the client went away."""

    count: int = 0
    closed: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[RawRequest, socket.socket], None]


class RawProvider:
    """An HTTP/1.1 server on loopback whose answers are written by the test's ``handler``."""

    def __init__(self, handler: Handler, *, read_body: bool = True) -> None:
        self.handler = handler
        self.read_body = read_body
        self.requests: list[RawRequest] = []
        self.lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def __enter__(self) -> RawProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting; connections still being answered end with their handler."""
        self._stop.set()
        self._accepting.join(5)
        self._listener.close()

    def arrived(self, path_start: str = "/") -> list[RawRequest]:
        """The requests whose path starts with ``path_start``."""
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_start)]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                request = _read_request(connection, self.read_body)
            except OSError:
                return
            if request is None:
                return
            with self.lock:
                self.requests.append(request)
            with contextlib.suppress(OSError):
                self.handler(request, connection)


def _read_request(connection: socket.socket, read_body: bool = True) -> RawRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0")) if read_body else 0
    body = bytearray(rest)
    while len(body) < length:
        chunk = connection.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return RawRequest(method, path, headers, bytes(body))


def head(status: int, headers: dict[str, str] | None = None, *, length: int | None = None) -> bytes:
    """A response head (``Connection: close``; ``Content-Length`` when ``length`` is given)."""
    lines = [f"HTTP/1.1 {status} X", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(
    connection: socket.socket, status: int, body: object, headers: dict[str, str] | None = None
) -> None:
    """A whole answer at once: ``body`` as JSON unless it is bytes."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    kinds = {"Content-Type": "application/json", **(headers or {})}
    connection.sendall(head(status, kinds, length=len(data)) + data)


def trickle(connection: socket.socket, data: bytes, every_s: float, stop: threading.Event) -> None:
    """``data`` one byte every ``every_s`` seconds, until it is all sent, the client goes away,
    or ``stop`` is set."""
    for byte in data:
        if stop.is_set():
            return
        connection.sendall(bytes([byte]))
        stop.wait(every_s)


def endless(connection: socket.socket, prefix: bytes, sent: Sent, *, total: int = 1 << 30) -> None:
    """``prefix`` then zeros up to ``total`` bytes, as fast as the client takes them; ``sent``
    counts what the client took (the connection closed by the client ends it)."""
    try:
        connection.sendall(prefix)
        zeros = bytes(1 << 16)
        while sent.count < total:
            connection.sendall(zeros)
            sent.count += len(zeros)
    except OSError:
        pass
    finally:
        sent.closed.set()


def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """A gzip body that inflates to ``inflated`` bytes of zeros (about 1 MB per GB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    parts = [packer.compress(zeros) for _ in range(inflated >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


def process_state(pid: int) -> str:
    """The one-letter state of process ``pid`` (``T``: stopped)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()[0].decode()


def wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Until process ``pid`` is stopped (after a SIGSTOP); a bound against a hang only."""
    deadline = time.monotonic() + timeout
    while process_state(pid) not in ("T", "t"):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} was not stopped")
        time.sleep(0.01)


def sleep_windows(total: float, step: float = 0.05) -> Iterator[None]:
    """Yield every ``step`` seconds for ``total`` seconds (a helper for handlers that poll)."""
    end = time.monotonic() + total
    while time.monotonic() < end:
        yield
        time.sleep(step)
