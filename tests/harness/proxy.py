"""A fault-injecting HTTP proxy in front of any provider emulator.

The proxy is a real HTTP server on loopback (served like the emulators, so ``stop()`` closes
its port: an outage) that forwards each request to its emulator, or answers in its place with a
fault drawn from a seeded plan. Being in front of the emulator rather than inside it, it works
the same for every provider kind. It logs every request with the fault it got, and the moment
before which, having answered with ``Retry-After``, it must not see another request.

Faults (names used in ``plan`` and in the figures):

==================  ========================================================  ==========
fault               what the daemon sees                                      forwarded
==================  ========================================================  ==========
``error_5xx``       500, 502 or 504 with a JSON error                         no
``cut_before``      a response cut off mid-body                               no
``cut_after``       a response cut off mid-body, after the provider applied   yes
``timeout_before``  no answer within the daemon's ``timeout_s``               no
``timeout_after``   no answer in time, after the provider applied             yes
``throttle_delta``  429 or 503 with ``Retry-After: <seconds>``                no
``throttle_date``   429 or 503 with ``Retry-After: <HTTP-date>``              no
``auth_401``        401 in the middle of the run                              no
``html_200``        200 with an HTML page (not the provider's success shape)  no
``empty_2xx``       201 with an empty body                                    no
``too_large``       413 for a request bigger than ``max_body`` (always)       no
``echo_auth``       400/401/422/500 whose body echoes ``Authorization``       no
==================  ========================================================  ==========

``echo_auth`` is for the secrets campaign: only a plan that names it draws it.

A fault in ``apply_first`` is forwarded too, its answer replaced after the provider applied
it: for the favourites provider, whose document gives no answer body, an empty 201 is a
documented success, so an empty 201 for a request the provider never saw would be a loss
the daemon cannot know of, not a fault it must survive.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import httpx
from dropsync.adapters.emulators.common import DroppedConnection, Emulator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULTS = (
    "error_5xx",
    "cut_before",
    "cut_after",
    "timeout_before",
    "timeout_after",
    "throttle_delta",
    "throttle_date",
    "auth_401",
    "html_200",
    "empty_2xx",
)
_HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


@dataclass(frozen=True, slots=True)
class ProxyArrival:
    """One request at the proxy: when, what, which fault, and any Retry-After it was given."""

    monotonic: float
    wall: float
    method: str
    path: str
    fault: str  # "pass" when forwarded untouched
    status: int
    not_before: float | None = None  # wall-clock moment the Retry-After answer allows


class _Cut(Response):
    """Starts a response, sends a fragment, then fails: the server cuts the connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"_id', "more_body": True})
        raise DroppedConnection("fault proxy: connection cut")


class FaultProxy(Emulator):
    """Forwards to ``upstream`` or injects a fault; serve it with ``EmulatorServer``."""

    name = "fault-proxy"

    def __init__(
        self,
        upstream: str,
        seed: int,
        *,
        timeout_s: float = 1.0,
        retry_after_s: tuple[int, ...] = (1, 2),
        throttle_statuses: tuple[int, ...] = (429, 503),
    ) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.plan: dict[str, float] = {}  # fault -> probability for each request
        self.max_body: int | None = None
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.throttle_statuses = throttle_statuses
        self.log: list[ProxyArrival] = []
        self.injected: Counter[str] = Counter()
        self.forced: list[str] = []  # faults for the next requests, in order, before the plan
        self.forced_for: dict[str, list[str]] = {}  # the same, for one method's requests
        self.apply_first: set[str] = set()  # faults answered after forwarding (see above)
        self._hold_prefix: str | None = None
        self._hold_method: str | None = None
        self.held = threading.Event()  # set once a held request was applied upstream
        self._release = threading.Event()

    # -- control, from the test's thread --------------------------------------------------

    def set_plan(self, plan: dict[str, float]) -> None:
        """Per-request probabilities of each fault (the rest pass untouched)."""
        unknown = set(plan) - {*FAULTS, "echo_auth"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        with self.lock:
            self.plan = dict(plan)

    def force(self, *faults: str) -> None:
        """Inject these faults, in order, into the next requests."""
        with self.lock:
            self.forced.extend(faults)

    def force_for(self, method: str, *faults: str) -> None:
        """Inject these faults, in order, into the next ``method`` requests (before ``force``'s)."""
        with self.lock:
            self.forced_for.setdefault(method, []).extend(faults)

    def hold_after_apply(self, path_prefix: str, method: str | None = None) -> None:
        """Forward the next request under ``path_prefix`` (of ``method``, if given), then hold
        its answer until ``release()`` (``held`` is set once the provider applied it): the
        moment to kill."""
        with self.lock:
            self.held.clear()
            self._release.clear()
            self._hold_prefix = path_prefix
            self._hold_method = method

    def cancel_hold(self) -> None:
        """Forget a hold that no request took yet."""
        with self.lock:
            self._hold_prefix = None

    def release(self) -> None:
        """Let a held answer go (it goes nowhere if its client was killed)."""
        self._release.set()

    def seen(self, method: str | None = None) -> list[ProxyArrival]:
        """The log so far (optionally one method only)."""
        with self.lock:
            return [a for a in self.log if method is None or a.method == method]

    # -- serving ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        """Every path and method goes to ``forward``."""
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.forward, methods=methods)])

    def _choose(self, method: str, path: str, size: int) -> tuple[str, bool]:
        """The fault for this request, and whether to hold its answer."""
        with self.lock:
            hold = (
                self._hold_prefix is not None
                and path.startswith(self._hold_prefix)
                and self._hold_method in (None, method)
            )
            if hold:
                self._hold_prefix = None
                return "pass", True
            if self.forced_for.get(method):
                return self.forced_for[method].pop(0), False
            if self.forced:
                return self.forced.pop(0), False
            if self.max_body is not None and size > self.max_body:
                return "too_large", False
            roll = self.rng.random()
            for fault, chance in self.plan.items():
                if roll < chance:
                    return fault, False
                roll -= chance
        return "pass", False

    async def forward(self, request: Request) -> Response:
        """Answer one request (see the module docstring)."""
        body = await request.body()
        started, wall = time.monotonic(), time.time()
        path = request.url.path
        fault, hold = self._choose(request.method, path, len(body))
        not_before: float | None = None
        response: Response
        if fault in ("pass", "cut_after", "timeout_after") or fault in self.apply_first:
            response = await self._upstream(request, body)
            if hold:
                self.held.set()
                while not self._release.is_set():  # noqa: ASYNC110 -- released from a thread
                    await asyncio.sleep(0.01)
            if fault == "cut_after":
                response = _Cut()
            elif fault == "timeout_after":
                await asyncio.sleep(self.timeout_s + 0.5)
            elif fault == "empty_2xx":
                response = Response(b"", 201, media_type="application/json")
        elif fault == "error_5xx":
            status = self.rng.choice((500, 502, 504))
            response = JSONResponse({"error": f"injected {status}"}, status_code=status)
        elif fault == "cut_before":
            response = _Cut()
        elif fault == "timeout_before":
            await asyncio.sleep(self.timeout_s + 0.5)
            response = JSONResponse({"error": "too late"}, status_code=504)
        elif fault in ("throttle_delta", "throttle_date"):
            seconds = self.rng.choice(self.retry_after_s)
            status = self.rng.choice(self.throttle_statuses)
            now = time.time()
            if fault == "throttle_delta":
                header = str(seconds)
                not_before = now + seconds
            else:
                moment = math.ceil(now + seconds)
                header = formatdate(moment, usegmt=True)
                not_before = float(moment)
            response = JSONResponse(
                {"error": "slow down"}, status_code=status, headers={"Retry-After": header}
            )
        elif fault == "echo_auth":
            # A provider that echoes the request's credentials back in its error body.
            status = self.rng.choice((400, 401, 422, 500))
            echoed = request.headers.get("authorization", "")
            response = JSONResponse(
                {"error": "rejected", "you_sent": {"Authorization": echoed}}, status_code=status
            )
        elif fault == "auth_401":
            response = JSONResponse({"error": "Unauthorized"}, status_code=401)
        elif fault == "html_200":
            response = Response(
                "<html><body>Service moved</body></html>", 200, media_type="text/html"
            )
        elif fault == "empty_2xx":
            response = Response(b"", 201, media_type="application/json")
        elif fault == "too_large":
            response = JSONResponse({"error": "Payload Too Large"}, status_code=413)
        else:
            raise AssertionError(f"unknown fault {fault}")
        with self.lock:
            if fault != "pass":
                self.injected[fault] += 1
            self.log.append(
                ProxyArrival(
                    started, wall, request.method, path, fault, response.status_code, not_before
                )
            )
        return response

    async def _upstream(self, request: Request, body: bytes) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            answer = await client.request(
                request.method,
                request.url.path,
                params=request.url.query or None,
                content=body,
                headers=headers,
            )
        kept = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding"
        }
        return Response(answer.content, answer.status_code, headers=kept)
