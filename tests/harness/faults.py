"""Campaign 3: provider faults.

Every provider (CRM, favourites, registrations, churn) sits behind a ``FaultProxy``. Under a
steady load, each proxy first injects every fault once (in a seeded order), then draws faults
at ``fault_rate``; requests bigger than ``max_body`` always get 413 (not the churn tool's: see
``provider_faults``); in the middle every proxy goes away for ``outage_s`` (connection
refused). The churn tool's callbacks go to the listener directly, as the faults are the
provider's, not the network's between it and the daemon. Then the faults stop, and an
operator reloads the daemon if a 401 left a provider ``auth-failed`` (the documented way to
resume it). The daemon must deliver everything it has
(liveness) without losing or inventing anything (the oracle); it must send no request before
the moment a ``Retry-After`` answer allowed, and schedule no backoff wait longer than
``backoff_cap_s``.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

from tests.harness.kill import CampaignResult, finish
from tests.harness.oracle import Violation
from tests.harness.proxy import FAULTS, FaultProxy
from tests.harness.world import ALL_KINDS, World, make_world

BACKOFF_CAP_S = 2.0
RETRY_AFTER_S = (1, 2)  # within the cap: a Retry-After above it is issue 9 item 5's matter
TIMEOUT_S = 1.0
_READY: set[int] = set()  # daemon processes seen ready (their SIGHUP handler is in place)


def _flow(kind: str, method: str, path: str) -> str | None:
    """Which flow a request belongs to: the puller's GETs, the flusher's other requests. A
    registrations login (a POST either flow may make) belongs to neither."""
    if kind == "registrations" and path.endswith("/login"):
        return None
    return "pull" if method == "GET" else "push"


def retry_after_respected(proxy: FaultProxy, name: str, kind: str | None = None) -> list[Violation]:
    """No request of a flow arrives before the moment a ``Retry-After`` answer to it allowed.

    The flusher's requests and the puller's GETs each go one at a time, so the next request of
    a flow was sent after the daemon read the throttling answer.
    """
    found: list[Violation] = []
    seen = proxy.seen()
    for flow in ("pull", "push"):
        not_before: float | None = None
        # In the order the requests arrived: the proxy logs each once answered, so a request
        # it held (a timeout fault) is logged after requests that came later.
        mine = sorted(
            (a for a in seen if _flow(kind or name, a.method, a.path) == flow),
            key=lambda a: a.monotonic,
        )
        for arrival in mine:
            if not_before is not None and arrival.wall < not_before:
                found.append(
                    Violation(
                        "retry_after",
                        f"{name}: {arrival.method} {arrival.path} came "
                        f"{not_before - arrival.wall:.3f} s "
                        "before the moment its Retry-After allowed",
                    )
                )
            if arrival.not_before is not None:
                not_before = max(not_before or 0.0, arrival.not_before)
    return found


def backoff_waits(world: World, cap_s: float) -> tuple[list[Violation], float]:
    """Every backoff the daemon scheduled (its log says ``retry_in_s``) is within ``cap_s``.

    Waits asked for by a ``Retry-After`` are the provider's, not backoff: they are checked by
    ``retry_after_respected``. Returns the violations and the longest backoff scheduled.
    """
    found: list[Violation] = []
    longest = 0.0
    for entry in world.all_events():
        wait = entry.get("retry_in_s")
        if not isinstance(wait, int | float):
            continue
        error = str(entry.get("error", ""))
        if "429" in error or "503" in error:
            continue  # the proxy's throttling answers always carry Retry-After
        longest = max(longest, float(wait))
        if wait > cap_s + 1e-6:
            found.append(
                Violation(
                    "backoff_cap", f"{entry.get('event')} scheduled {wait} s > {cap_s} s: {entry}"
                )
            )
    return found, longest


def _auth_failed(world: World) -> list[str]:
    db = sqlite3.connect(world.store, timeout=30)
    try:
        rows = db.execute("SELECT name FROM providers WHERE state = 'auth-failed'").fetchall()
    finally:
        db.close()
    return [row[0] for row in rows]


def resume_auth_failed(world: World) -> bool:
    """The operator's part: a provider paused by a 401 is resumed with a reload (SIGHUP), as
    docs/providers.md says. True if a reload was done."""
    if not _auth_failed(world):
        return False
    process = world.daemon.process
    try:
        if process is None or process.pid not in _READY:
            world.daemon.wait_for("daemon_ready", timeout=30)
            if process is not None:
                _READY.add(process.pid)
        world.daemon.send_signal(signal.SIGHUP)
        world.daemon.wait_for("config_reloaded", timeout=30)
    except AssertionError:
        return False  # it died meanwhile: revived on the next round
    # The reload's own event stays in this run's log: look for the next one from here on.
    world.daemon.mark_log()
    return True


def operate(world: World, seconds: float) -> int:
    """Let ``seconds`` pass as an attentive operator would: a daemon that exits is started
    again (systemd), a provider paused by a 401 is reloaded. Returns the reloads done."""
    reloads = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        world.run_for(0.2)
        reloads += resume_auth_failed(world)
    return reloads


def provider_faults(
    root: Path,
    seed: int,
    *,
    seconds: float = 20.0,
    outage_s: float = 3.0,
    fault_rate: float = 0.3,
    load_per_second: float = 8.0,
    settle_timeout: float = 120.0,
    kinds: tuple[str, ...] = ALL_KINDS,
) -> CampaignResult:
    """Campaign 3 (see the module docstring)."""
    result = CampaignResult(seed)
    rng = random.Random(seed ^ 0xFA17)
    world = make_world(
        root,
        seed,
        proxies=True,
        proxy_timeout_s=TIMEOUT_S,
        backoff_cap_s=BACKOFF_CAP_S,
        timeout_s=TIMEOUT_S,
        # Mostly new keys: a version lost to a fault is not hidden by a newer one.
        load_options={"contact_keys": 100_000, "favourite_items": 5_000},
        kinds=kinds,
    )
    proxies = {kind: world.proxy(kind) for kind in world.kinds}
    servers = [world.proxy_server(kind) for kind in world.kinds]
    started = time.monotonic()
    try:
        for kind, proxy in proxies.items():
            proxy.retry_after_s = RETRY_AFTER_S
            # A 413 makes the CRM split its batch down to single contacts, which pass; the
            # churn tool's files hold every record of a (brand, table): 413 would refuse them.
            proxy.max_body = None if kind == "churn" else 3000
            if kind == "favourites":
                proxy.apply_first.add("empty_2xx")  # its documented success (proxy.py)
            first = list(FAULTS)
            rng.shuffle(first)
            proxy.force(*first)
            share = fault_rate / len(FAULTS)
            proxy.set_plan(dict.fromkeys(FAULTS, share))
        world.daemon.start()
        world.load.start(load_per_second)
        reloads = operate(world, seconds / 2)
        for server in servers:
            assert server is not None
            server.stop()  # outage: connection refused
        reloads += operate(world, outage_s)
        for server in servers:
            assert server is not None
            server.start()
        reloads += operate(world, seconds / 2)
        for proxy in proxies.values():
            proxy.set_plan({})
        # Every fault once per provider: on a slow machine the first ones take longer.
        deadline = time.monotonic() + 60
        while any(p.forced for p in proxies.values()) and time.monotonic() < deadline:
            reloads += operate(world, 0.5)
        world.load.stop()
        reloads += operate(world, 1.0)

        def tend() -> None:
            nonlocal reloads
            reloads += resume_auth_failed(world)

        finish(
            world,
            result,
            settle_timeout=settle_timeout,
            backlog=False,
            restart=False,
            tend=tend,
        )
        for name, proxy in proxies.items():
            result.add(retry_after_respected(proxy, name))
        waits, longest = backoff_waits(world, BACKOFF_CAP_S)
        result.add(waits)
        result.figures.update(
            faults_injected={name: dict(proxy.injected) for name, proxy in proxies.items()},
            faults_total=sum(sum(p.injected.values()) for p in proxies.values()),
            requests={name: len(proxy.seen()) for name, proxy in proxies.items()},
            longest_backoff_s=longest,
            reloads=reloads,
        )
        for name, proxy in proxies.items():
            missing = set(FAULTS) - set(proxy.injected)
            if missing:
                result.add([Violation("coverage", f"{name}: faults never injected: {missing}")])
    finally:
        world.close()
    result.figures["seconds"] = round(time.monotonic() - started, 1)
    return result
