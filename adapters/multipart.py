"""A ``multipart/form-data`` request body streamed from files on disk.

httpx's own multipart support reads each file through the request body in one
piece per part; a churn upload carries files of up to 2 GB, so the body is built
here: its exact length is known beforehand (``Content-Length``, no chunked
encoding), and the files are read in chunks while the request is sent.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FieldPart:
    """A form field: name and text value."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class FileUpload:
    """A file part: form field name, the file name the server sees, where it is on disk."""

    name: str
    filename: str
    path: Path
    content_type: str = "application/json"


def _quote(value: str) -> str:
    # RFC 7578: the names are quoted strings; quotes and line breaks are percent-encoded.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """The body of one request; ``headers`` and ``stream()`` go to ``httpx`` as they are."""

    def __init__(self, parts: Sequence[FieldPart | FileUpload], boundary: str | None = None):
        self.boundary = boundary or f"dropsync-{secrets.token_hex(16)}"
        self.parts = list(parts)
        self._heads: list[bytes] = []
        length = 0
        for part in self.parts:
            head = self._head(part)
            self._heads.append(head)
            size = (
                part.path.stat().st_size
                if isinstance(part, FileUpload)
                else len(part.value.encode())
            )
            length += len(head) + size + 2
        self.length = length + len(self._tail)

    @property
    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def _head(self, part: FieldPart | FileUpload) -> bytes:
        disposition = f'form-data; name="{_quote(part.name)}"'
        lines = [f"--{self.boundary}"]
        if isinstance(part, FileUpload):
            disposition += f'; filename="{_quote(part.filename)}"'
            lines += [f"Content-Disposition: {disposition}", f"Content-Type: {part.content_type}"]
        else:
            lines += [f"Content-Disposition: {disposition}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type`` with the boundary, and the exact ``Content-Length``."""
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(self.length),
        }

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, files read from disk a chunk at a time."""
        for head, part in zip(self._heads, self.parts, strict=True):
            yield head
            if isinstance(part, FileUpload):
                async with await anyio.open_file(part.path, "rb") as file:
                    while chunk := await file.read(CHUNK):
                        yield chunk
            else:
                yield part.value.encode()
            yield b"\r\n"
        yield self._tail
