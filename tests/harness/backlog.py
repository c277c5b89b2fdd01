"""Campaign 2: the daemon starts on a backlog.

Files wait in the drop folder and in ``.processing/`` (as a run killed between claiming a file
and writing its ledger row leaves them), and inbox rows are pending, when the daemon starts;
then the same again with the daemon killed in the middle of the backlog and restarted. Every
file must be ingested once, every row applied, the ledger counts exact, and no line logged at
``error`` level.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import oracle
from tests.harness.kill import CampaignResult, finish, lay_backlog
from tests.harness.oracle import Violation
from tests.harness.world import World, make_world


def _wait_for_progress(world: World, timeout: float = 60.0) -> bool:
    """Wait until the daemon has filed some of the backlog away (False: it never did)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = oracle.StoreView(world.store)
        if any(e[2] != "processing" for entries in view.files.values() for e in entries):
            return True
        if world.daemon.process is not None and world.daemon.process.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def start_on_backlog(
    root: Path,
    seed: int,
    *,
    waiting: int = 30,
    processing: int = 6,
    rows: int = 200,
    kill_midway: bool = False,
    settle_timeout: float = 120.0,
) -> CampaignResult:
    """Campaign 2; with ``kill_midway`` the first start is killed once some files are done."""
    result = CampaignResult(seed)
    world = make_world(root, seed)
    started = time.monotonic()
    try:
        world.daemon.start()  # the store, for the pending inbox rows
        world.stop()
        lay_backlog(world, waiting=waiting, processing=processing, rows=rows)
        if kill_midway:
            world.daemon.spawn()
            if not _wait_for_progress(world):
                result.add([Violation("liveness", "no file of the backlog was ever filed away")])
            world.kill()
            result.add(oracle.durable_now(world.store, world.load.ledger), prefix="after kill: ")
            # What the kill left in .processing/ is part of the backlog of the next start.
        finish(world, result, settle_timeout=settle_timeout, backlog=False)
    finally:
        world.close()
    result.figures.update(
        waiting=waiting,
        processing=processing,
        rows=rows,
        killed_midway=kill_midway,
        seconds=round(time.monotonic() - started, 1),
    )
    return result
