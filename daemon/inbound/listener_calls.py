"""What the daemon does for a call to a kind's inbound route (``adapters.inbound.Call``).

The kind verifies and reads the call; this applies what it says: a sync status through the
held confirmations (``daemon.inbound.held_confirmations``), a job's outcome and the kind's own rows
in one store transaction, the replay memory (a key accepted before is refused 401), the
wake of a provider whose records were queued again, background work after the answer, and
the summarised warnings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from dropsync.adapters.base import Provider
from dropsync.adapters.inbound import InboundProvider, JobDone, Refused, SentBefore, Settled
from dropsync.store import callbacks
from starlette.requests import Request

from .. import metrics
from ..clock import now_ms

if TYPE_CHECKING:
    from .listener import Listener

T = TypeVar("T")

REPLAYED = "signature already accepted (replay)"


class ListenerCall:
    """One call to a kind's route, served by ``listener``."""

    def __init__(
        self, listener: Listener, request: Request, kind: str, route: str, max_body: int
    ) -> None:
        self._listener = listener
        self._request = request
        self._max_body = max_body
        self.route = route
        self.path_params: Mapping[str, str] = dict(request.path_params)
        self.providers: Sequence[InboundProvider] = listener.providers_of(kind)

    async def body(self) -> bytes:
        """The request's body, within the route's and the listener's limits."""
        return await self._listener.body(self._request, self._max_body)

    async def json(self) -> Any:
        """The body as JSON text."""
        return await self._listener.json(self._request, self._max_body)

    def now(self) -> int:
        """The daemon's clock, epoch ms."""
        return now_ms()

    @property
    def clock_skew_ms(self) -> int:
        """``max_clock_skew_s`` of the daemon's config, in ms."""
        return self._listener.config.max_clock_skew_ms

    async def settle(
        self,
        provider: str,
        confirmation: SentBefore | JobDone,
        *,
        replay: str | None = None,
        then: Callable[[sqlite3.Connection, Settled], None] | None = None,
    ) -> Settled:
        """Apply ``confirmation`` (and ``then``) in one transaction; wake the provider when
        records were queued again."""
        key = None if replay is None else (self.route, replay)
        settled: Settled | None
        if isinstance(confirmation, SentBefore):
            applied = await self._listener.confirmations.receive(
                provider, confirmation, replay=key, now=now_ms()
            )
            settled = None if applied is None else _settled(applied.deliveries, applied.queued)
        else:
            settled, confirmed = await self._listener.store.transact(
                _settle_job, provider, confirmation, key, then, now_ms()
            )
            metrics.confirmed(provider, confirmed)
        if settled is None:
            raise Refused(401, REPLAYED)
        if settled.queued:
            self._listener.wake([provider])
        return settled

    async def write(
        self, provider: str, write: Callable[[sqlite3.Connection], T], *, replay: str | None = None
    ) -> T:
        """Run ``write`` in one transaction, unless ``replay`` was accepted before."""
        key = None if replay is None else (self.route, replay)
        now = now_ms()

        def apply(db: sqlite3.Connection) -> tuple[T] | None:
            if key is not None and not callbacks.remember_signature(db, provider, *key, now=now):
                return None
            return (write(db),)

        written = await self._listener.store.transact(apply)
        if written is None:
            raise Refused(401, REPLAYED)
        return written[0]

    async def save_error_log(
        self, provider: str, *, url: str | None, body: str | None, error: str | None
    ) -> None:
        """Keep an error log the provider offers (or why it could not be had)."""
        await self._listener.store.transact(
            partial(
                callbacks.save_integration_error,
                provider=provider,
                url=url,
                body=body,
                error=error,
                now=now_ms(),
            )
        )

    def adapter(self, provider: str) -> Provider | None:
        """The running adapter of ``provider``."""
        return self._listener.adapter(provider)

    def wake(self, provider: str) -> None:
        """Nudge the provider's flusher."""
        self._listener.wake([provider])

    def start(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the listener's task group (not when the listener is not serving)."""
        if self._listener.task_group is not None:
            self._listener.task_group.start_soon(_run, work)

    def warning(self, event: str, key: Hashable, **fields: Any) -> None:
        """A warning a caller can cause, summarised when it floods."""
        self._listener.repeats.warning(event, key, **fields)


async def _run(work: Callable[[], Awaitable[None]]) -> None:
    await work()


def _settled(deliveries: int, queued: int) -> Settled:
    return Settled(carried=deliveries, deliveries=deliveries, queued=queued)


def _settle_job(
    db: sqlite3.Connection,
    provider: str,
    job: JobDone,
    replay: tuple[str, str] | None,
    then: Callable[[sqlite3.Connection, Settled], None] | None,
    now: int,
) -> tuple[Settled | None, int]:
    """In the store's thread, one transaction: the job's batches, then the kind's rows.
    Returns what was settled (None: a replay) and the records confirmed."""
    if replay is not None and not callbacks.remember_signature(db, provider, *replay, now=now):
        return None, 0
    confirmed = 0
    failed = job.state == "failed"
    if job.state is None:
        settled = Settled(len(callbacks.job_deliveries(db, provider, job.job)), 0, 0)
    else:
        carried, ids, queued = callbacks.settle_job(
            db, provider, job.job, failed=failed, error=job.error, now=now
        )
        settled = Settled(carried, len(ids), queued)
        if not carried:
            callbacks.hold_job(db, provider, job.job, failed=failed, error=job.error, now=now)
            settled = Settled(0, 0, 0, held=True)
        if job.state == "confirmed":
            confirmed = callbacks.delivery_items(db, ids)
    if then is not None:
        then(db, settled)
    return settled, confirmed
