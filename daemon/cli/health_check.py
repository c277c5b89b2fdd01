"""``dropsync status --check``: the store's health as a monitoring plugin reports it.

The output follows the Monitoring Plugins Development Guidelines: a first line
``DROPSYNC STATUS: text | perfdata``, then one line per further problem (worst first).
The first line's text is the worst problem (``(and N more)`` when there are others) or
the ``OK`` summary. The exit code is the worst level: 0 OK, 1 WARNING, 2 CRITICAL, and 3
UNKNOWN when the check itself cannot run (a bad option value, a config it cannot read,
a missing or unreadable store): then the one line says why and there is no perfdata.

=============================================  =========================================
daemon not running (no process holds the lock)  critical
a pause of the running daemon, a stale heartbeat warning (see ``runstate.describe``)
a reload it refused (runs on its old config)    warning
a provider ``auth-failed``                      critical
users paused (``provider_users``)              warning (their tokens refused, or none)
oldest pending entry older than the thresholds  warning / critical (``--pending-warn/-crit``)
dead letters present                            warning
batches accepted but not confirmed in time      warning (``unconfirmed``: callback kinds)
free space on the store's file system           warning / critical (``--disk-warn/-crit``)
=============================================  =========================================

Perfdata, per provider: ``'pending_NAME'=N;;;0``, ``'oldest_NAME'=Ns;WARN;CRIT;0`` (the
age of its oldest pending entry, 0 when none), ``'dead_letters_NAME'=N;;;0``; then
``'inbox_pending'=N;;;0``, ``'quarantined_files'=N;;;0`` and ``'disk_free'=P%;W:;C:;0;100``.

Only the standard library here (and the provider states, which are): ``status`` imports
this and must start fast.
"""

from __future__ import annotations

import math
import os
import sqlite3

from dropsync.store import state_values as states

from .common import DISK_CRIT_PCT, DISK_WARN_PCT, PENDING_CRIT_S, PENDING_WARN_S

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

    # What the check found: the problems, the OK summary, the perfdata items.
    Result = tuple[list["Problem"], str, list[str]]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SERVICE = "DROPSYNC"


class Unknown(Exception):
    """The check cannot run (exit 3): the message says why."""


class Thresholds:
    """When a finding becomes a warning or critical (defaults documented in docs/cli.md).

    Plain classes here, neither dataclasses (inspect) nor NamedTuples (typing): importing
    either would cost ``status --check`` more than its queries.
    """

    __slots__ = ("disk_crit_pct", "disk_warn_pct", "pending_crit_s", "pending_warn_s")

    def __init__(
        self,
        pending_warn_s: float = PENDING_WARN_S,
        pending_crit_s: float = PENDING_CRIT_S,
        disk_warn_pct: float = DISK_WARN_PCT,
        disk_crit_pct: float = DISK_CRIT_PCT,
    ) -> None:
        self.pending_warn_s = pending_warn_s
        self.pending_crit_s = pending_crit_s
        self.disk_warn_pct = disk_warn_pct
        self.disk_crit_pct = disk_crit_pct

    def problem(self) -> str | None:
        """Why these thresholds cannot be used together, or None."""
        if self.pending_crit_s < self.pending_warn_s:
            return (
                f"--pending-crit ({number(self.pending_crit_s)}) is below --pending-warn "
                f"({number(self.pending_warn_s)}): critical must be the older age"
            )
        if self.disk_crit_pct > self.disk_warn_pct:
            return (
                f"--disk-crit ({number(self.disk_crit_pct)}) is above --disk-warn "
                f"({number(self.disk_warn_pct)}): critical must be the smaller free space"
            )
        return None


class Problem:
    """One finding: its level and one line of text an operator can act on."""

    __slots__ = ("level", "text")

    def __init__(self, level: int, text: str) -> None:
        self.level = level
        self.text = text


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def number(value: float) -> str:
    """``value`` in the perfdata grammar: plain decimal digits, never an exponent."""
    if value == int(value):
        return str(int(value))
    from decimal import Decimal

    return f"{Decimal(repr(value)):f}"


def label(name: str) -> str:
    """A perfdata label, quoted: a quote doubled; ``=``, ``|`` and control characters,
    which no parser takes inside a label, replaced by ``_``."""
    safe = "".join(
        "_" if char in "=|" or not char.isprintable() else char for char in name
    ).replace("'", "''")
    return f"'{safe}'"


def _one_line(text: str) -> str:
    """``text`` fit for a plugin's line: no line break, no ``|`` (which starts perfdata)."""
    return " ".join(text.split()).replace("|", "/")


def provider_problems(row: dict[str, Any], thresholds: Thresholds) -> list[Problem]:
    """What is wrong with one ``pending_by_provider`` row."""
    name = row["provider"]
    found = []
    if row["state"] == states.PROVIDER_AUTH_FAILED:
        found.append(
            Problem(
                CRITICAL,
                f"provider {name}: auth-failed ({row.get('last_error') or 'no detail'}); fix its "
                f"secret, then systemctl reload dropsync or dropsync resync {name}",
            )
        )
    age = row.get("oldest_age_s")
    if age is not None and age > thresholds.pending_warn_s:
        level = CRITICAL if age > thresholds.pending_crit_s else WARNING
        limit = thresholds.pending_crit_s if level == CRITICAL else thresholds.pending_warn_s
        found.append(
            Problem(
                level,
                f"provider {name}: oldest pending entry is {_age(age)} old (over {limit:g} s); "
                f"{row['pending']} pending, state {row['state']}",
            )
        )
    users = row.get("paused_users") or []
    if users:
        from .status import describe_user

        shown = "; ".join(describe_user(user) for user in users[:5])
        more = f"; and {len(users) - 5} more" if len(users) > 5 else ""
        found.append(
            Problem(
                WARNING,
                f"provider {name}: {len(users)} user(s) paused, the others go on: {shown}{more}. "
                f"A new token for a user resumes them (or dropsync resync {name})",
            )
        )
    if row.get("dead_letters"):
        found.append(
            Problem(
                WARNING,
                f"provider {name}: {row['dead_letters']} dead letter(s) "
                f"(dropsync dead-letters list --provider {name})",
            )
        )
    if row.get("unconfirmed"):
        found.append(
            Problem(
                WARNING,
                f"provider {name}: {row['unconfirmed']} batch(es) ({row['unconfirmed_items']} "
                f"record(s)) accepted but not confirmed within its confirm_timeout_s "
                f"(dropsync resync {name} --unconfirmed)",
            )
        )
    return found


def provider_perfdata(row: dict[str, Any], thresholds: Thresholds) -> list[str]:
    """Pending, oldest pending age and dead letters of one ``pending_by_provider`` row."""
    name = row["provider"]
    age = row.get("oldest_age_s")
    # No pending entry reads as age 0; a clock set back (an entry from the future) as well.
    seconds = int(age) if isinstance(age, int | float) and math.isfinite(age) and age > 0 else 0
    warn, crit = number(thresholds.pending_warn_s), number(thresholds.pending_crit_s)
    return [
        f"{label(f'pending_{name}')}={int(row['pending'])};;;0",
        f"{label(f'oldest_{name}')}={seconds}s;{warn};{crit};0",
        f"{label(f'dead_letters_{name}')}={int(row['dead_letters'])};;;0",
    ]


def disk_check(
    store_path: str | os.PathLike[str], thresholds: Thresholds
) -> tuple[list[Problem], list[str]]:
    """Free space on the file system that holds the store: problems and perfdata."""
    folder = os.path.dirname(store_path) or "."
    try:
        # What shutil.disk_usage reads, without importing shutil (and its compressors).
        usage = os.statvfs(folder)
    except OSError as exc:
        return [Problem(WARNING, f"disk: cannot see the free space of {folder}: {exc}")], []
    free, total = usage.f_bavail * usage.f_frsize, usage.f_blocks * usage.f_frsize
    free_pct = 100.0 * free / total if total else 100.0
    # A range "W:" alerts below W (the guidelines' syntax), as the check does.
    perfdata = [
        f"{label('disk_free')}={free_pct:.2f}%;{number(thresholds.disk_warn_pct)}:;"
        f"{number(thresholds.disk_crit_pct)}:;0;100"
    ]
    if free_pct >= thresholds.disk_warn_pct:
        return [], perfdata
    level = CRITICAL if free_pct < thresholds.disk_crit_pct else WARNING
    limit = thresholds.disk_crit_pct if level == CRITICAL else thresholds.disk_warn_pct
    problem = Problem(
        level,
        f"disk: {free_pct:.1f}% free on the file system of {store_path} "
        f"({free // (1 << 20)} MiB; under {limit:g}%)",
    )
    return [problem], perfdata


def _read(explicit: str | None) -> tuple[str, dict[str, Any]]:
    """The store's path and its status summary; Unknown if either cannot be had."""
    from dropsync.store.errors import StoreError

    from ..config_file import store_path_of
    from ..errors import ConfigError, DropsyncError
    from .common import existing_store
    from .status import read_status

    try:
        store_path = store_path_of(explicit)
    except ConfigError as exc:
        raise Unknown(f"config: {exc}") from exc
    try:
        store_path = existing_store(explicit, store_path)
        return store_path, read_status(store_path)
    except (DropsyncError, StoreError, OSError) as exc:
        raise Unknown(f"store: {exc}") from exc
    except sqlite3.Error as exc:
        from dropsync.store.diagnosis import describe_database_error

        raise Unknown(f"store {store_path}: {describe_database_error(exc)}") from exc


def check(explicit: str | None, thresholds: Thresholds) -> Result:
    """Every problem found, the one-line summary for when there are none, and the perfdata.

    Raises Unknown when the check cannot run.
    """
    problem = thresholds.problem()
    if problem is not None:
        raise Unknown(problem)
    store_path, summary = _read(explicit)
    found: list[Problem] = []
    daemon = summary["daemon"]
    if not daemon["running"]:
        found.append(
            Problem(
                CRITICAL,
                f"daemon: not running on {store_path} (no process holds {daemon['lock']})",
            )
        )
    else:
        import time

        from ..process.runstate import describe

        # A busy store or a full disk the daemon waits out, a reload it refused, or a
        # heartbeat gone quiet.
        for line in describe(daemon.get("runtime"), int(time.time() * 1000)):
            found.append(Problem(WARNING, line))
    perfdata: list[str] = []
    for row in summary["providers"]:
        found += provider_problems(row, thresholds)
        perfdata += provider_perfdata(row, thresholds)
    perfdata.append(f"{label('inbox_pending')}={int(summary['inbox_pending'])};;;0")
    perfdata.append(f"{label('quarantined_files')}={int(summary['files']['quarantined'])};;;0")
    disk_found, disk_perfdata = disk_check(store_path, thresholds)
    found += disk_found
    perfdata += disk_perfdata
    pending = sum(row["pending"] for row in summary["providers"])
    ok = (
        f"dropsync running (pid {daemon['pid'] or 'unknown'}); "
        f"{len(summary['providers'])} provider(s), {pending} pending, none older than "
        f"{thresholds.pending_warn_s:g} s; no dead letters"
    )
    return found, ok, perfdata


def render(result: Result) -> tuple[str, int]:
    """The plugin's output (the status line with perfdata, then the other problems, worst
    first) and its exit code."""
    found, ok, perfdata = result
    tail = f" | {' '.join(perfdata)}" if perfdata else ""
    if not found:
        return f"{SERVICE} OK: {_one_line(ok)}{tail}", OK
    ordered = sorted(found, key=lambda p: -p.level)
    worst = ordered[0]
    more = f" (and {len(ordered) - 1} more)" if len(ordered) > 1 else ""
    lines = [f"{SERVICE} {_NAMES[worst.level]}: {_one_line(worst.text)}{more}{tail}"]
    lines += [f"{_NAMES[p.level]}: {_one_line(p.text)}" for p in ordered[1:]]
    return "\n".join(lines), worst.level


def render_unknown(reason: str) -> tuple[str, int]:
    """The plugin's output when the check cannot run, and exit 3."""
    return f"{SERVICE} UNKNOWN: {_one_line(reason)}", UNKNOWN
