"""The systemd ``sd_notify`` protocol, written with the standard library.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: the address of an
``AF_UNIX`` datagram socket (a filesystem path, or ``@name`` for the abstract
namespace). Each datagram is newline-separated ``KEY=value`` assignments:

- ``READY=1`` once the store is open and the watcher is running (and again after
  a reload), optionally with ``STATUS=``;
- ``STATUS=<one line>`` whenever there is something new to show in
  ``systemctl status``;
- ``RELOADING=1`` plus ``MONOTONIC_USEC=`` when a SIGHUP reload starts;
- ``STOPPING=1`` when shutdown starts;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (see ``run_watchdog``).

Without ``$NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same in a
terminal. Sending never raises: a failure is logged as ``notify_failed`` and the
daemon goes on (supervision is a courtesy to systemd, not a reason to stop syncing).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

import anyio
import structlog

log = structlog.get_logger(__name__)

# A datagram to a full notify socket would block the event loop; give up after this.
SEND_TIMEOUT_S = 1.0


def _socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address for ``$NOTIFY_SOCKET``, or None if it is not one we can use."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def _one_line(text: str) -> str:
    """``text`` with line breaks folded to spaces (a newline would start a new assignment)."""
    return " ".join(text.splitlines()).strip()


class Notifier:
    """Sends state changes to systemd over ``$NOTIFY_SOCKET``; a no-op when it is unset."""

    def __init__(
        self,
        socket_path: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        """Notify ``socket_path`` (``$NOTIFY_SOCKET`` syntax; None disables every call).

        ``watchdog_usec`` and ``watchdog_pid`` are ``$WATCHDOG_USEC`` and
        ``$WATCHDOG_PID`` already parsed; see ``watchdog_interval``.
        """
        self._address: str | None = None
        if socket_path:
            self._address = _socket_address(socket_path)
            if self._address is None:
                log.warning(
                    "notify_failed",
                    socket=socket_path,
                    error="NOTIFY_SOCKET must be an absolute path or start with '@'",
                )
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        Unparsable watchdog values are logged and ignored (no watchdog).
        """
        env = os.environ
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_positive_int(env, "WATCHDOG_USEC"),
            watchdog_pid=_positive_int(env, "WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self._address is not None

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up (or a reload) is complete: ``READY=1`` [+ ``STATUS=``]."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        self._send(fields)

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status`` (``STATUS=``)."""
        self._send([f"STATUS={_one_line(text)}"])

    def reloading(self) -> None:
        """Tell systemd a reload started: ``RELOADING=1`` and ``MONOTONIC_USEC=`` (now).

        The daemon sends ``ready()`` when the reload is over, whether it succeeded or not.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(["RELOADING=1", f"MONOTONIC_USEC={now_usec}"])

    def stopping(self) -> None:
        """Tell systemd shutdown started: ``STOPPING=1``."""
        self._send(["STOPPING=1"])

    def watchdog(self) -> None:
        """Ping the service watchdog: ``WATCHDOG=1``."""
        self._send(["WATCHDOG=1"])

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half ``$WATCHDOG_USEC``), or None for no watchdog.

        None as well when notification is disabled, or when ``$WATCHDOG_PID`` is set
        and names another process (the watchdog is meant for the service's main PID).
        """
        if not self.enabled or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket (idempotent; a later send opens a new one)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, fields: list[str]) -> None:
        address = self._address
        if address is None:
            return
        message = "\n".join(fields).encode("utf-8", errors="replace")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.settimeout(SEND_TIMEOUT_S)
                    self._sock = sock
                self._sock.sendto(message, address)
            except OSError as exc:
                log.warning(
                    "notify_failed",
                    state=fields[0].partition("=")[0],
                    error=f"{type(exc).__name__}: {exc}",
                )
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("notify_failed", variable=name, error=f"not a positive integer: {raw!r}")
        return None
    return value


async def run_watchdog(notifier: Notifier) -> None:
    """Send ``WATCHDOG=1`` every ``notifier.watchdog_interval()`` seconds, forever.

    Runs on the event loop on purpose: if the loop is blocked the pings stop and
    systemd restarts the service. Returns at once when no watchdog is configured.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await anyio.sleep(interval)
