"""Reading an answer the server sends before it has read the request's body.

Many servers and proxies answer an upload at once (401 to a wrong token, 413 to a size
they will not take) and close the connection without reading the body. The body bytes
still arriving make the server's kernel reset the connection. httpcore means to read
such an answer (it ignores the write error and reads, encode/httpcore#723), but on
asyncio the failed write makes the transport close its socket, and the answer waiting
in the kernel's buffer goes with it: the upload fails with a ``ReadError`` and the
status is lost (a refused token would show as ``offline``, retried forever).

``install(client)`` wraps the network backend of an httpx client's connection pool so
that each plain (``http://``) connection keeps a duplicate of its socket. Before each
write of a request, the duplicate is asked, without blocking, whether the server has
sent something already; if so, or if a write fails, the request stops there (httpcore
is told the write failed, so it reads the answer) and the answer is read from the
duplicate, which the transport's closing does not close: the kernel keeps what arrived
before the reset. An upload to a server that has answered is not streamed on. Such an
answer is marked (``answered_early(response)``): a 2xx to a request the server has not read
whole is no success (``adapters.http`` makes it an unexpected answer).

A TLS connection's bytes are records the TLS layer must read, not the answer: it is not
wrapped (``start_tls`` drops the duplicate). For those, a cheap authenticated request
before a large upload (the churn kind's ``probe_above_mb``) finds a refused token
before anything is streamed, and one after an upload cut off by the server finds it
afterwards.
"""

# httpcore's network stream interface takes timeouts as parameters (ours are None: each
# request's Deadline bounds it whole).
# ruff: noqa: ASYNC109

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx

_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT)


def install(client: httpx.AsyncClient) -> bool:
    """Wrap the network backend of ``client``'s default transport; False if this httpx
    does not have one where it is expected (then answers sent early may be lost)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.AsyncNetworkBackend):
        return False
    if not isinstance(backend, EarlyAnswerBackend):
        pool._network_backend = EarlyAnswerBackend(backend)  # type: ignore[union-attr]
    return True


def answered_early(response: httpx.Response) -> bool:
    """Whether ``response`` came before its request was written whole (or the write failed)."""
    stream = response.extensions.get("network_stream")
    return bool(getattr(stream, "answered_early", False))


class EarlyAnswerBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, whose plain connections read an answer sent early."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection of the inner backend, wrapped."""
        stream = await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return EarlyAnswerStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection of the inner backend, wrapped."""
        stream = await self.inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return EarlyAnswerStream(stream)

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self.inner.sleep(seconds)


class EarlyAnswerStream(httpcore.AsyncNetworkStream):
    """A plain connection that notices, and reads, an answer sent while it writes."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self.stream = stream
        self._copy: socket.socket | None = None
        self._early = False  # the answer is read from the copy from now on
        # The server answered before the request was written whole (whatever it says, it
        # cannot be a success of a request it has not read).
        self.answered_early = False
        raw = stream.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                self._copy = raw.dup()
                self._copy.setblocking(False)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """The inner stream's bytes; once the server answered early, the copy's."""
        if not self._early or self._copy is None:
            return await self.stream.read(max_bytes, timeout)
        while True:
            try:
                return self._copy.recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno in _GONE:
                    return b""  # everything that arrived before the reset was read
                raise httpcore.ReadError(str(exc)) from exc
            with anyio.fail_after(timeout):
                await anyio.wait_readable(self._copy)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write, unless the server has answered (or gone): then the request stops here."""
        if self._early:
            raise httpcore.WriteError("the server answered before the request was sent whole")
        if buffer and self._answered():
            self._early = self.answered_early = True
            raise httpcore.WriteError("the server answered before the request was sent whole")
        try:
            await self.stream.write(buffer, timeout)
        except httpcore.WriteError:
            self._early = self._copy is not None
            self.answered_early = True
            raise

    def _answered(self) -> bool:
        """Whether the server sent something (or closed) while the request is written."""
        if self._copy is None:
            return False
        try:
            self._copy.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True  # reset: what it sent before is still to be read
        return True  # bytes, or b"": the server closed

    async def aclose(self) -> None:
        """Close the copy and the inner stream."""
        self._drop_copy()
        await self.stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """TLS: the raw bytes are not the answer, so the TLS stream is not wrapped."""
        self._drop_copy()
        return await self.stream.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> Any:
        """As the inner stream."""
        return self.stream.get_extra_info(info)

    def _drop_copy(self) -> None:
        if self._copy is not None:
            self._copy.close()
            self._copy = None
