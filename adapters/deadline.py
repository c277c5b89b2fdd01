"""One request's whole deadline: connect, send, the answer's head and body.

httpx's timeouts are per operation (a read timeout restarts with each byte), so a provider
that trickles its answer a byte at a time holds a request for ever. The adapters' requests
run under a ``Deadline`` instead (httpx's own timeouts are off), watched by a task beside the
request that cancels it when the deadline passes:

* a request whose body is in memory: ``timeout_s`` from the start, for the whole exchange;
* an upload streamed from disk (``upload_bytes``): the body must keep moving (each chunk taken
  within ``timeout_s`` of the previous one, the first within ``timeout_s`` of the start) and be
  all sent by ``timeout_s`` plus its size at ``min_upload_rate``; once it is sent, the answer
  has ``timeout_s``.

Time the process did not run is not counted. The deadline is kept on the monotonic clock,
which goes on while the process is stopped (SIGSTOP) or its event loop is held up; an answer
that arrived meanwhile is waiting whole in the socket when the process runs again, and must
be read, not thrown away with the request (which would send it again). The watch looks at the
clock every ``TICK_S``; a look that comes more than ``PAUSE_S`` late means the process was not
running, and that gap is added to the deadline before the deadline is judged. A suspended
machine needs nothing of this: the monotonic clock stops with it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

TICK_S = 0.25  # how often the watch looks at the clock
PAUSE_S = 0.5  # a look this much later than asked: the process was not running meanwhile


class DeadlinePassed(Exception):
    """The request was cancelled at its deadline; ``str()`` says which rule it broke."""


class Deadline:
    """The deadline of one request (see the module's docstring for the rules)."""

    def __init__(
        self,
        timeout_s: float,
        *,
        upload_bytes: int | None = None,
        min_upload_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.upload_bytes = upload_bytes
        self.min_upload_rate = min_upload_rate
        self.clock = clock
        self.paused = 0.0  # seconds the process was seen not running during the request
        self.passed: str | None = None  # why the request was cancelled
        self._start = clock()
        self._moved = self._start  # the last moment the upload's body moved
        self._sent: float | None = None  # the moment the whole body was handed over
        allowance = 0.0
        if upload_bytes and min_upload_rate:
            allowance = upload_bytes / min_upload_rate
        self._send_by = self._start + timeout_s + allowance

    def now(self) -> float:
        """The request's clock: monotonic time, less the pauses seen."""
        return self.clock() - self.paused

    def _due(self) -> tuple[float, str]:
        """The moment the request must be done by, and the rule that sets it."""
        limit = f"timeout_s = {self.timeout_s:g} s"
        if self.upload_bytes is None:
            return self._start + self.timeout_s, f"no whole answer within {limit}"
        if self._sent is not None:
            return self._sent + self.timeout_s, (
                f"no whole answer within {limit} of sending the body"
            )
        stalled = self._moved + self.timeout_s
        if stalled < self._send_by:
            return stalled, f"the body did not move for {limit}"
        rate = (self.min_upload_rate or 0) / 1024
        return self._send_by, (
            f"the body ({self.upload_bytes} bytes) was not sent within {limit} plus its size "
            f"at min_upload_kb_s = {rate:g}"
        )

    def moved(self) -> None:
        """The upload's body moved on (a chunk was taken)."""
        self._moved = self.now()

    def sent(self) -> None:
        """The upload's body is all handed over: the answer's own deadline starts."""
        self._sent = self.now()

    async def track(self, body: AsyncIterable[bytes]) -> AsyncGenerator[bytes]:
        """``body`` as it is, noting each chunk taken and the end. Closing this closes
        ``body`` too (a request cut short lets go of the file it was reading at once)."""
        chunks = aiter(body)
        try:
            async for chunk in chunks:
                self.moved()
                yield chunk
            self.sent()
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    async def _watch(self, scope: anyio.CancelScope) -> None:
        last = self.clock()
        while True:
            due, rule = self._due()
            wait = min(TICK_S, max(0.0, due - self.now()))
            await anyio.sleep(wait)
            now = self.clock()
            late = now - last - wait
            if late > PAUSE_S:
                self.paused += late  # stopped, or the event loop held: not the provider's time
            last = now
            due, rule = self._due()
            if self.now() >= due:
                self.passed = rule
                scope.cancel()
                return

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``'s result, or ``DeadlinePassed`` when it is not done by the deadline.

        A result that comes as the deadline passes is kept; ``work``'s own errors are raised
        as they are.
        """
        done: list[T] = []
        error: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, group.cancel_scope)
            try:
                done.append(await work())
            except Exception as exc:  # raised below, outside the group (not as a group)
                error = exc
            group.cancel_scope.cancel()
        if done:
            return done[0]
        if error is not None and self.passed is None:
            raise error
        raise DeadlinePassed(self.passed or "cancelled")
