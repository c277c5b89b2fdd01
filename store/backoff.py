"""The one backoff rule: how long a retry loop waits after consecutive failures.

Every retry loop of the daemon calls ``backoff_s``: the store's waits for a busy store or a
full disk (``store.handle.retrying``), the restart of a part of the daemon
(``daemon.process.runner``), the listener waiting for its address
(``daemon.inbound.listener``), the watcher's restarts (``daemon.ingest.watcher``), the files
whose ingest failed (``daemon.ingest.recovery``) and the providers' backoff
(``daemon.delivery.provider_health``). It lives in ``store``, the lowest layer, because
``store`` may not import ``daemon``.

Jitter where many things retry together, none where determinism matters:

* the providers' backoff has full jitter (a uniform draw between 0 and the exponential
  ceiling): every flusher of every daemon that found a provider down retries it, and
  spreading those retries over the window is the point;
* every other loop waits the ceiling itself: each retries one local thing (the store, a
  socket, the drop folder, one file) that no crowd competes for, and its waits are shown
  (``retry_in_s`` in the log, ``status``) and tested as exact values.
"""

from __future__ import annotations

import random

# The local waits (the store, the listener's address, a part of the daemon restarted):
# 0.5 s, doubling, at most 10 s (each attempt at a locked store first waits busy_timeout,
# 5 s, inside SQLite).
FIRST_S = 0.5
CAP_S = 10.0


def backoff_s(
    failures: int,
    *,
    first_s: float = FIRST_S,
    cap_s: float = CAP_S,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based).

    ``first_s`` doubling with each failure, never more than ``cap_s``; with ``rng``, a
    uniform draw between 0 and that (full jitter).
    """
    ceiling = min(cap_s, first_s * 2.0 ** min(max(failures, 1) - 1, 62))
    return ceiling if rng is None else rng.uniform(0.0, ceiling)
