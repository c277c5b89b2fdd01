"""Signal handling from the first instant of ``dropsync run``, before the event loop.

Python's default for SIGHUP is to end the process; the daemon's own handling (in
``daemon.process.runner``) starts only once its event loop runs. ``install()`` is the first
thing ``dropsync run`` does: from then on a SIGHUP is remembered (if it came after the
config was read, the daemon reloads once it is ready; before, it is moot: the config
is read after it) and a SIGTERM or SIGINT stops the start-up (``StopBeforeStart``,
exit 0). Only the standard library: it runs before anything heavy is imported.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

_state: dict[str, float | None] = {"last_hup": None, "config_read": None}


class StopBeforeStart(BaseException):
    """SIGTERM or SIGINT arrived before the daemon's own handling was in place."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def hup_received() -> None:
    """Remember a SIGHUP, for ``reload_pending``."""
    _state["last_hup"] = time.monotonic()


def _remember_hup(signum: int, frame: FrameType | None) -> None:
    hup_received()


def _stop(signum: int, frame: FrameType | None) -> None:
    # Later TERMs during the unwinding are ignored: one is enough.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise StopBeforeStart(signum)


def install() -> None:
    """Remember SIGHUP, stop on SIGTERM/SIGINT (until the daemon's handling takes over)."""
    signal.signal(signal.SIGHUP, _remember_hup)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def config_read() -> None:
    """Mark the moment the config is read: a SIGHUP before it needs no reload."""
    _state["config_read"] = time.monotonic()


def reload_pending() -> bool:
    """True (once) if a SIGHUP came after the config was read; the daemon reloads then."""
    hup, read = _state["last_hup"], _state["config_read"]
    _state["last_hup"] = None
    return hup is not None and (read is None or hup >= read)


def ignore_all() -> None:
    """After the daemon's own handling ended (it is exiting): nothing ends it early now."""
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
