"""A provider's lanes (``adapters.base.Laned``): which may send, which wait, and why.

A lane is a part of a provider with credentials of its own (a user and their
token). Its state is stored (``store.lanes``, the ``provider_users`` view); the daemon
keeps a copy, one ``LaneHealth`` per provider, kept with its ``ProviderHealth`` across
reloads:

* ``active``: it has credentials and nothing refused them: pushed to and pulled.
* ``auth-failed``: the provider answered one of its requests (a push or a pull) with
  ``AuthError`` (401, 403). That lane alone waits; its outbox entries are set aside
  (``outbox.held_lane``), the other lanes go on at their pace. When every lane that has
  credentials is refused, the provider itself is ``auth-failed``. It is tried again at
  once when its credentials change (``credentials``), after ``dropsync resync NAME``, and
  once per flow after a (re)start or a reload (repeating refused credentials can lock an
  account, as for the provider).
* ``no-token``: it has no credentials (never had, or they were removed): it is not pulled
  and its entries are set aside until credentials arrive.

Entries set aside are given back when their lane may send again, and all of them at each
(re)start (the flusher sets aside again those that still wait).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence

import anyio
import structlog
from dropsync.adapters.errors import AuthError
from dropsync.store import lanes, outbox
from dropsync.store.handle import Store
from dropsync.store.lanes import ACTIVE, AUTH_FAILED, NO_TOKEN, LaneRow

from ..clock import now_ms

log = structlog.get_logger(__name__)

GONE = "its credentials were removed"
PUSH, PULL = "push", "pull"  # the flows (``provider_health.Flow`` values)


class LaneHealth:
    """The lanes of one provider: their states, the one attempt after a (re)start, and the
    lanes to pull soon (their credentials just changed)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.paused: dict[str, LaneRow] = {}  # the lanes that are not active, as stored
        self.available: frozenset[str] = frozenset()  # the lanes with credentials
        self._probes: dict[str, set[str]] = {PUSH: set(), PULL: set()}
        self._stale = False
        self._refusing: set[str] = set()  # refusals read and not stored yet
        self.started = False
        self.pull_soon: set[str] = set()
        self.pull_wanted = anyio.Event()

    # -- starting, reading -----------------------------------------------------------------

    async def start(self, available: Iterable[str]) -> None:
        """The provider's tasks start (again): note the lanes with credentials, read the
        others' states, give back every entry set aside; each ``auth-failed`` lane gets one
        attempt per flow."""
        self.available = frozenset(available)
        self.paused = await self.store.transact(self._start, now_ms())
        refused = {lane for lane, row in self.paused.items() if row.state == AUTH_FAILED}
        self._probes = {PUSH: set(refused), PULL: set(refused)}
        self._stale = False
        self.started = True

    def _start(self, db: sqlite3.Connection, now: int) -> dict[str, LaneRow]:
        known = lanes.known_lanes(db, self.name)
        fresh = [lane for lane in self.available if known.get(lane) in (None, NO_TOKEN)]
        lanes.set_lane(db, self.name, fresh, state=ACTIVE, now=now)
        gone = [lane for lane, s in known.items() if lane not in self.available and s != NO_TOKEN]
        lanes.set_lane(db, self.name, gone, state=NO_TOKEN, now=now, reason=GONE)
        lanes.release(db, self.name)
        return lanes.lane_states(db, self.name)

    def store_changed(self) -> None:
        """Another program committed (``dropsync resync`` among them): read the states again
        before the next pass (``refresh``)."""
        self._stale = True

    async def refresh(self) -> None:
        """Read the states again if the store changed since."""
        if self._stale:
            self._stale = False
            stored = await self.store.call(lanes.lane_states, self.name)
            # A refusal being stored stays (it is newer than what was read).
            stored.update({lane: self.paused[lane] for lane in self._refusing & set(self.paused)})
            self.paused = stored

    # -- asking ------------------------------------------------------------------------------

    def may_send(self, lane: str, flow: str, *, attempt: bool = False) -> bool:
        """Whether ``lane`` may be sent to (or pulled) now; ``attempt``: this is the attempt
        (an ``auth-failed`` lane's one attempt after a (re)start is used up)."""
        if lane not in self.available:
            return False
        row = self.paused.get(lane)
        if row is None or row.state != AUTH_FAILED:
            return True
        probes = self._probes[flow]
        if lane not in probes:
            return False
        if attempt:
            probes.discard(lane)
        return True

    # -- refusals and successes (``*_db``: in the caller's transaction, the store's thread) --

    def refuse_db(self, db: sqlite3.Connection, lane: str, error: str, now: int) -> bool:
        """Store that the provider refused ``lane``'s credentials; True when every lane with
        credentials is refused now (the provider is then ``auth-failed``)."""
        lanes.set_lane(db, self.name, [lane], state=AUTH_FAILED, now=now, reason=error)
        refused = {
            name
            for name, row in lanes.lane_states(db, self.name).items()
            if row.state == AUTH_FAILED
        }
        every = bool(self.available) and self.available <= refused
        if every:
            outbox.refuse_provider(
                db,
                self.name,
                now=now,
                last_error=f"every lane's credentials are refused ({len(refused)}); "
                f"the last: {lane}: {error}",
            )
        return every

    def answered(self, lane: str, error: str, flow: str) -> None:
        """The provider refused ``lane``'s credentials: it waits from this moment on, before
        anything is awaited (the other flow must not send with them meanwhile)."""
        self.paused[lane] = LaneRow(lane, AUTH_FAILED, now_ms(), error)
        self._probes[flow].discard(lane)  # the other flow keeps its attempt, as a provider's
        self._refusing.add(lane)

    def refused(self, lane: str, error: str, every: bool, flow: str, now: int) -> None:
        """Once the refusal is stored: the lane waits, and it is said."""
        self.paused[lane] = LaneRow(lane, AUTH_FAILED, now, error)
        self._refusing.discard(lane)
        log.warning("lane_auth_failed", provider=self.name, lane=lane, via=flow, error=error)
        if every:
            log.warning(
                "provider_auth_failed",
                provider=self.name,
                error="every lane's credentials are refused",
                lanes=len(self.available),
            )

    async def refuse(self, lane: str, exc: AuthError, flow: str) -> bool:
        """A pull of ``lane`` was refused: stored and said; True when every lane is."""
        self.answered(lane, str(exc), flow)
        now = now_ms()
        every = await self.store.transact(self.refuse_db, lane, str(exc), now)
        self.refused(lane, str(exc), every, flow, now)
        return every

    def was_refused(self, lane: str) -> bool:
        """True while ``lane`` is ``auth-failed`` (a success must then be stored)."""
        row = self.paused.get(lane)
        return row is not None and row.state == AUTH_FAILED

    def accept_db(self, db: sqlite3.Connection, lane: str, now: int) -> None:
        """``lane`` was answered (its attempt after a restart worked): ``active`` again."""
        lanes.set_lane(db, self.name, [lane], state=ACTIVE, now=now)
        lanes.release(db, self.name, [lane])
        outbox.resume_refused_provider(db, self.name, now=now)

    def accepted(self, lane: str) -> None:
        """Once stored: the lane is active, and it is said."""
        if self.paused.pop(lane, None) is not None:
            log.info("lane_resumed", provider=self.name, lane=lane, reason="answered")

    async def accept(self, lane: str) -> None:
        """A pull of ``lane`` worked: if it was refused, it is active again."""
        if self.was_refused(lane):
            await self.store.transact(self.accept_db, lane, now_ms())
            self.accepted(lane)

    # -- credentials -------------------------------------------------------------------------

    async def credentials(
        self, available: Iterable[str], changed: Iterable[str], gone: Iterable[str]
    ) -> bool:
        """The credentials changed: lanes with new ones are tried again at once (``active``,
        their entries given back, pulled soon), lanes whose credentials were removed wait
        (``no-token``). True when the provider was ``auth-failed`` and is no more."""
        self.available = frozenset(available)
        fresh = [lane for lane in changed if lane in self.available]
        removed = [lane for lane in gone if lane not in self.available]
        now = now_ms()
        for lane in fresh:
            self.paused.pop(lane, None)
            for probes in self._probes.values():
                probes.discard(lane)
        for lane in removed:
            self.paused[lane] = LaneRow(lane, NO_TOKEN, now, GONE)
        resumed = await self.store.transact(self._credentials, fresh, removed, now)
        self.pull_soon.update(fresh)
        if fresh:
            self.pull_wanted.set()
        return resumed

    def _credentials(
        self, db: sqlite3.Connection, fresh: Sequence[str], removed: Sequence[str], now: int
    ) -> bool:
        lanes.set_lane(db, self.name, fresh, state=ACTIVE, now=now)
        lanes.release(db, self.name, fresh)
        lanes.set_lane(db, self.name, removed, state=NO_TOKEN, now=now, reason=GONE)
        return bool(fresh) and outbox.resume_refused_provider(db, self.name, now=now)

    def take_pull_soon(self) -> set[str]:
        """The lanes to pull before the next round (and forget them)."""
        soon, self.pull_soon = self.pull_soon, set()
        self.pull_wanted = anyio.Event()
        return soon


def hold_db(
    db: sqlite3.Connection, provider: str, held: Mapping[str, Sequence[int]], now: int
) -> None:
    """Set outbox entries aside for their lane (lane -> entry ids)."""
    lanes.hold(db, provider, held, now=now)
