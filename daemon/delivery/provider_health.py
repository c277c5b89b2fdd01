"""One provider's health, shared by its pushes and its pulls.

The supervisor keeps one ``ProviderHealth`` per provider for as long as the daemon runs
(reloads included); the delivery loop (``daemon.delivery.flusher``, both its senders) and the pull
loop (``daemon.delivery.providers``) ask it whether they may send and tell it how each failure went.
It is the one place that

* counts a failure and computes the wait after it: the provider's ``Retry-After`` within
  ``max_retry_after_s`` (``retry_after_capped`` beyond it), else backoff with full jitter
  (``store.backoff``, ``backoff_base_s`` .. ``backoff_cap_s``), never under 50 ms;
* turns a wait into the moment of the next attempt (``next_attempt_at``: rounded up, never
  a moment early);
* holds the provider back: ``wait_turn`` returns once a flow may send;
* gives an ``auth-failed`` provider one attempt per flow after a (re)start or a reload
  (``restarted``): repeating refused credentials can lock the account;
* stores the provider's state (``providers``) and logs it (``provider_offline``,
  ``provider_backing_off``, ``provider_auth_failed``, ``retry_after_capped``,
  ``pull_failed``, ``pull_auth_failed``, ``provider_online``, ``provider_unusable``).

Waits. A wait lives in the store, ``providers.next_attempt_at`` (``status`` shows it, a
restart keeps it, ``dropsync resync NAME`` clears it); what the daemon keeps in memory is
a copy, counted on the monotonic clock (a wall clock set back or forward neither stretches
nor shortens it). Two kinds:

* the push's backoff (or ``Retry-After``) after a failed push: pushes wait for it; pulls
  do not (they go on at ``pull_interval_s``);
* a ``Retry-After`` (the *hold*), from a push or a pull: the provider's own word, so
  neither flow sends before it. It is kept in memory the moment the answer is read, before
  anything is awaited, and written to the store with the failure; should a reload cut
  that write short, the next ``wait_turn`` writes it (a reload never lets the next request
  go early). Once written, the store decides: a stored wait that ``resync`` cleared (or
  that was brought back within the ceiling) ends the copy too. The daemon's own writes keep
  a hold stored while it lasts (a request in flight taken meanwhile does not clear it).

``store_changed`` (another program committed: the inbox applier's WAL watch) makes every
waiter read the store again, so ``dropsync resync NAME`` ends each wait of that provider
in the running daemon at once: push backoff, a ``Retry-After`` from either flow, and
``auth-failed``.

After a restart the copy is made again from the store: pushes wait for the stored moment,
whatever set it; pulls are not held by it (a restart does not know whether the moment is
a push's backoff, which pulls never waited for).

A provider whose unit of failure is smaller than itself (``adapters.base.Laned``: a lane
per user, each with a token of their own) has its lanes' states under this one (``lanes``,
a ``daemon.delivery.lanes.LaneHealth``): a lane's refused credentials pause that lane alone, and the
provider is ``auth-failed`` only when every lane with credentials is. Every other failure
(a lane's request that is not answered, a Retry-After, a 5xx) is the provider's.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import anyio
import structlog
from dropsync.adapters.errors import (
    AuthError,
    ProviderError,
    ProviderUnavailable,
    RetryableError,
)
from dropsync.store import outbox
from dropsync.store.backoff import backoff_s
from dropsync.store.handle import Store
from dropsync.store.states import ProviderState

from ..clock import now_ms
from ..config import ProviderConfig
from .lanes import LaneHealth

log = structlog.get_logger(__name__)

MIN_DELAY_S = 0.05  # the shortest wait after a failure (a Retry-After of 0 included)
# An auth-failed provider waits for a change (a resync, a reload); this is a safety net.
AUTH_RECHECK_S = 30.0


class Flow(StrEnum):
    """The two ways the daemon talks to a provider."""

    PUSH = "push"
    PULL = "pull"


def failure_state(exc: ProviderError) -> ProviderState:
    """The provider's state after a request failed with ``exc`` (not a refusal):
    ``auth-failed``, ``offline`` (not reached) or ``backing-off``."""
    if isinstance(exc, AuthError):
        return ProviderState.AUTH_FAILED
    if isinstance(exc, ProviderUnavailable):
        return ProviderState.OFFLINE
    return ProviderState.BACKING_OFF


def next_attempt_at(now: int, delay_s: float) -> int:
    """The moment (ms) ``delay_s`` after ``now``, as stored: rounded up, plus 1 ms for the
    truncation of ``now_ms()``, so it is never a moment early."""
    return now + math.ceil(delay_s * 1000) + 1


@dataclass(frozen=True, slots=True)
class _Moment:
    """A moment waited for: as stored (``next_attempt_at``, ms) and on the monotonic clock."""

    at: int
    end: float


@dataclass(slots=True)
class _Hold:
    """A ``Retry-After`` being waited out; ``written`` once the store shows it."""

    moment: _Moment
    written: bool = False


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure as stored: the provider's state, its error, the consecutive failures, the
    seconds until the next attempt (None: not a time: ``auth-failed`` waits for a reload or
    a resync) and the moment stored (a ``Retry-After`` still holding the provider may make
    it later than that)."""

    state: ProviderState
    error: str
    failures: int = 0
    delay: float | None = None
    next_attempt_at: int | None = None


class ProviderHealth:
    """One provider's state, waits and failures, for its pushes and pulls alike."""

    def __init__(
        self, store: Store, config: ProviderConfig, *, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.name = config.name
        self.rng = rng or random.Random()
        self._wait: _Moment | None = None  # the stored next attempt, measured once
        self._hold: _Hold | None = None
        self._probes = set(Flow)
        self._changed = anyio.Event()
        self.lanes = LaneHealth(store, self.name)

    def restarted(self, config: ProviderConfig) -> None:
        """The provider's tasks start (again, after a reload): the new config, and one
        attempt per flow even if it is ``auth-failed``."""
        self.config = config
        self._probes = set(Flow)

    def store_changed(self) -> None:
        """Another program committed (``dropsync resync`` among them): look again."""
        self.lanes.store_changed()
        self._changed.set()
        self._changed = anyio.Event()

    async def idle(self, seconds: float) -> None:
        """Wait ``seconds``, or until the store changes."""
        with anyio.move_on_after(seconds):
            await self._changed.wait()

    # -- waiting --------------------------------------------------------------------------

    async def wait_turn(
        self, flow: Flow, idle: Callable[[float], Awaitable[None]] | None = None
    ) -> None:
        """Return once ``flow`` may send: the provider is not ``auth-failed`` (or this is the
        flow's one attempt after a (re)start), no ``Retry-After`` holds it, and (pushes) the
        stored next attempt has come.

        ``idle(seconds)`` waits meanwhile (default: until the store changes); each time it
        returns, the store is read again (a resync or a reload may have ended the wait).
        """
        idle = idle or self.idle
        probe = flow in self._probes
        self._probes.discard(flow)
        while True:
            row = await self.store.call(outbox.provider_state, self.name)
            await self._follow(row)
            if row is not None and row.state is ProviderState.AUTH_FAILED and not probe:
                await idle(AUTH_RECHECK_S)  # a resync or a reload changes the state
                continue
            left = self.left(flow)
            if left <= 0:
                return
            await idle(left)

    def left(self, flow: Flow) -> float:
        """Seconds ``flow`` still waits (0: it may send)."""
        now = anyio.current_time()
        ends = [now]
        if self._hold is not None:
            ends.append(self._hold.moment.end)
        if flow is Flow.PUSH and self._wait is not None:
            ends.append(self._wait.end)
        return max(ends) - now

    def held(self) -> bool:
        """True while a ``Retry-After`` holds the provider (no request of either flow)."""
        return self._hold is not None and self._hold.moment.end > anyio.current_time()

    def held_until(self) -> int | None:
        """The stored moment of the hold, while there is one (safe from the store's thread:
        it reads one attribute and no clock)."""
        hold = self._hold
        return None if hold is None else hold.moment.at

    async def _follow(self, row: outbox.ProviderRow | None) -> None:
        """Make the copy in memory follow the store (see the module docstring)."""
        stored = row.next_attempt_at if row is not None else None
        now = anyio.current_time()
        if stored is None:
            self._wait = None
        elif self._wait is None or self._wait.at != stored:
            # The span until that moment is measured once, within the provider's ceiling.
            left = min(max(0.0, (stored - now_ms()) / 1000), self.config.max_delay_s)
            self._wait = _Moment(stored, now + left)
        hold = self._hold
        if hold is None:
            return
        if hold.moment.end <= now:
            self._hold = None
        elif not hold.written:
            # Its recording was cut short (a reload): the store gets it now.
            await self.store.transact(
                outbox.hold_provider, self.name, until=hold.moment.at, now=now_ms()
            )
            hold.written = True
        elif stored is None:
            self._hold = None  # resync ended it
        elif stored < hold.moment.at and self._wait is not None:
            # Brought back within the ceiling (a reload with a lower max_retry_after_s).
            self._hold = _Hold(_Moment(stored, min(hold.moment.end, self._wait.end)), True)

    # -- failures -------------------------------------------------------------------------

    def answered(self, exc: ProviderError, flow: Flow) -> float | None:
        """A failed answer was just read: its ``Retry-After`` (within the ceiling) holds the
        provider from this moment on, before anything is awaited. Returns the hold's seconds
        (None: no ``Retry-After``)."""
        asked = self._retry_after(exc, flow)
        if asked is None:
            return None
        moment = _Moment(next_attempt_at(now_ms(), asked), anyio.current_time() + asked)
        if self._hold is None or self._hold.moment.end < moment.end:
            self._hold = _Hold(moment)
        return asked

    def _retry_after(self, exc: ProviderError, flow: Flow | None) -> float | None:
        """The wait the provider's ``Retry-After`` asks for, up to ``max_retry_after_s``;
        logged when it is cut (``flow``: None, not logged). None: no ``Retry-After``."""
        asked = exc.retry_after if isinstance(exc, RetryableError) else None
        if asked is None:
            return None
        ceiling = self.config.max_retry_after_s
        if asked > ceiling and flow is not None:
            log.warning(
                "retry_after_capped",
                provider=self.name,
                retry_after_s=asked,
                max_retry_after_s=ceiling,
                **({"via": "pull"} if flow is Flow.PULL else {}),
            )
        return max(min(asked, ceiling), MIN_DELAY_S)

    def _delay(self, exc: ProviderError | None, failures: int) -> float:
        """Seconds until the next attempt after the ``failures``-th consecutive failure."""
        asked = None if exc is None else self._retry_after(exc, None)
        if asked is not None:
            return asked
        config = self.config
        jittered = backoff_s(
            failures, first_s=config.backoff_base_s, cap_s=config.backoff_cap_s, rng=self.rng
        )
        return max(MIN_DELAY_S, jittered)

    def push_failure(self, db: sqlite3.Connection, exc: ProviderError, now: int) -> Failure:
        """Count a failed push and store the provider's state after it (in the caller's
        transaction, in the store's thread). ``auth-failed`` is not counted: it waits for
        a reload or a resync, not for a time."""
        state = failure_state(exc)
        if state is ProviderState.AUTH_FAILED:
            return self._store(db, Failure(state, str(exc)), now)
        return self._count(db, state, str(exc), exc, now)

    def local_failure(self, db: sqlite3.Connection, error: str, now: int) -> Failure:
        """A push that could not be made for a local reason (its files could not be
        written): counted and waited out like a failed answer, ``backing-off``."""
        return self._count(db, ProviderState.BACKING_OFF, error, None, now)

    def _count(
        self,
        db: sqlite3.Connection,
        state: ProviderState,
        error: str,
        exc: ProviderError | None,
        now: int,
    ) -> Failure:
        current = outbox.provider_state(db, self.name)
        failures = (current.failures if current else 0) + 1
        delay = self._delay(exc, failures)
        return self._store(
            db, Failure(state, error, failures, delay, next_attempt_at(now, delay)), now
        )

    def _store(self, db: sqlite3.Connection, failure: Failure, now: int) -> Failure:
        held = self.held_until()
        if held is not None and held > now and (failure.next_attempt_at or 0) < held:
            # A Retry-After still holds the provider: the stored wait keeps it.
            failure = Failure(failure.state, failure.error, failure.failures, failure.delay, held)
        outbox.set_provider_state(
            db,
            self.name,
            state=failure.state,
            now=now,
            next_attempt_at=failure.next_attempt_at,
            failures=failure.failures,
            last_error=failure.error,
        )
        return failure

    def failure_stored(
        self, failure: Failure, *, event: str | None = None, **fields: object
    ) -> None:
        """Once the failure is stored: wait for its next attempt, and say so (``event``,
        else ``provider_<state>``, with ``fields``)."""
        stored = failure.next_attempt_at
        if stored is not None and failure.delay is not None:
            self._wait = _Moment(stored, anyio.current_time() + failure.delay)
        hold = self._hold
        if hold is not None and stored is not None and stored >= hold.moment.at:
            hold.written = True
        if event is not None:
            log.warning(
                event, provider=self.name, error=failure.error, retry_in_s=failure.delay, **fields
            )
            return
        log.warning(
            f"provider_{failure.state.replace('-', '_')}",
            provider=self.name,
            error=failure.error,
            retry_in_s=failure.delay,
            failures=failure.failures,
            **fields,
        )

    # -- pulls ----------------------------------------------------------------------------

    async def pull_failed(self, exc: ProviderError) -> None:
        """A pull failed: shown like a push failure (a pull's failures are not counted: it
        is tried again after ``pull_interval_s``, or after the provider's ``Retry-After``
        when that is longer, which then holds the pushes too)."""
        asked = self.answered(exc, Flow.PULL)
        state = failure_state(exc)
        if state is ProviderState.AUTH_FAILED:
            log.warning("pull_auth_failed", provider=self.name, error=str(exc))
        else:
            log.warning(
                "pull_failed",
                provider=self.name,
                state=state,
                error=str(exc),
                next_pull_in_s=round(max(self.config.pull_interval_s, asked or 0.0), 3),
            )
        hold = self._hold if asked is not None else None
        await self.store.transact(
            outbox.record_pull_failure,
            self.name,
            state=state,
            last_error=str(exc),
            now=now_ms(),
            held_until=None if hold is None else hold.moment.at,
        )
        if hold is not None:
            hold.written = True

    async def pull_ok(self) -> None:
        """A pull worked: the provider's error is cleared (unless a push still waits)."""
        if await self.store.transact(outbox.record_pull_ok, self.name, now=now_ms()):
            log.info("provider_online", provider=self.name, via="pull")

    async def unusable(self, reason: str) -> None:
        """The provider cannot be set up (its secret cannot be read): ``auth-failed``."""
        log.error("provider_unusable", provider=self.name, reason=reason)
        await self.store.transact(
            outbox.set_provider_state,
            self.name,
            state=ProviderState.AUTH_FAILED,
            now=now_ms(),
            last_error=reason,
        )
