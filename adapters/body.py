"""An answer's body read up to a cap, counted in decoded bytes.

httpx decodes a compressed body one network chunk at a time, and a 64 KiB chunk of gzip can
inflate to 64 MiB: a cap checked after each decoded chunk is passed by that much before it is
seen. The body is read raw here and inflated with ``zlib``'s ``max_length``, so no more than the
cap (and one byte, to know it was passed) is ever inflated. Requests ask for ``gzip`` and
``deflate`` only (``ACCEPT_ENCODING``); a body in another encoding is kept as it came (its
status and raw bytes still say something) and cannot be a success (``BodyError``).
"""

from __future__ import annotations

import zlib

import httpx

ACCEPT_ENCODING = "gzip, deflate"


class BodyError(Exception):
    """The body cannot be read as sent (an encoding not asked for, broken compression)."""


class _Inflater:
    """Inflates gzip or deflate (zlib-wrapped, else raw, as httpx does), bounded per call."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        wbits = zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self.inflate = zlib.decompressobj(wbits)
        self.started = False

    def feed(self, data: bytes, room: int) -> bytes:
        """What ``data`` inflates to, at most ``room + 1`` bytes (more is never made)."""
        if self.inflate.eof:
            return b""  # anything after the end of the stream is not part of the body
        try:
            out = self.inflate.decompress(data, room + 1)
        except zlib.error:
            if self.encoding != "deflate" or self.started:
                raise BodyError(f"the {self.encoding} body is broken") from None
            # Some servers send raw deflate under "deflate" (httpx accepts both).
            self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self.started = True
            return self.feed(data, room)
        self.started = True
        return out

    def end(self, room: int) -> bytes:
        """What is left once the raw body has ended (at most ``room + 1`` bytes)."""
        if self.inflate.eof:
            return b""
        try:
            rest = self.inflate.flush()[: room + 1]
        except zlib.error:
            raise BodyError(f"the {self.encoding} body is broken") from None
        if not self.inflate.eof and len(rest) <= room:
            raise BodyError(f"the {self.encoding} body ends before its end")
        return rest


def _inflater(response: httpx.Response) -> _Inflater | None:
    """The decoder of the response's ``Content-Encoding``; None: bytes as they are.

    Raises BodyError for an encoding that was not asked for (or a chain of several)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(encoding)
    raise BodyError(f"the body is in content encoding {encoding[:40]!r}, which was not asked for")


async def read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool, str | None]:
    """Up to ``limit`` decoded bytes of the body; whether that was all of it; and, for a body
    that could not be decoded, why (its raw bytes, up to ``limit``, are returned then)."""
    try:
        inflater = _inflater(response)
    except BodyError as exc:
        body, complete = await _read_raw(response, limit)
        return body, complete, str(exc)
    if inflater is None:
        body, complete = await _read_raw(response, limit)
        return body, complete, None
    buffer = bytearray()
    try:
        async for chunk in response.aiter_raw():
            buffer += inflater.feed(chunk, limit - len(buffer))
            if len(buffer) > limit:
                del buffer[limit:]
                return bytes(buffer), False, None
        buffer += inflater.end(limit - len(buffer))
    except BodyError as exc:
        return bytes(buffer), False, str(exc)
    if len(buffer) > limit:
        del buffer[limit:]
        return bytes(buffer), False, None
    return bytes(buffer), True, None


async def _read_raw(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    buffer = bytearray()
    async for chunk in response.aiter_raw():
        buffer += chunk
        if len(buffer) > limit:
            del buffer[limit:]
            return bytes(buffer), False
    return bytes(buffer), True
