"""``dropsync status --check``: the store's health as a monitoring plugin reports it.

One line per problem, ``CRITICAL: ...`` or ``WARNING: ...`` (critical first), or one
``OK: ...`` line; the exit code is the worst level: 0 ok, 1 warning, 2 critical (the
Nagios / Icinga / Sensu plugin convention). What is checked, and at which level:

=============================================  =========================================
daemon not running (no process holds the lock)  critical
a provider ``auth-failed``                      critical
users paused (``provider_users``)              warning (their tokens refused, or none)
oldest pending entry older than the thresholds  warning / critical (``--pending-warn/-crit``)
dead letters present                            warning
batches accepted but not confirmed in time      warning (``unconfirmed``: callback kinds)
free space on the store's file system           warning / critical (``--disk-warn/-crit``)
the store cannot be read at all                 critical
=============================================  =========================================

Only the standard library here (and the provider states, which are): ``status`` imports
this and must start fast.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dropsync.store.states import ProviderState

OK, WARNING, CRITICAL = 0, 1, 2
_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a finding becomes a warning or critical (defaults documented in docs/cli.md)."""

    pending_warn_s: float = 900.0
    pending_crit_s: float = 3600.0
    disk_warn_pct: float = 10.0
    disk_crit_pct: float = 5.0


class Problem(NamedTuple):
    """One finding: its level and one line of text an operator can act on."""

    level: int
    text: str


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def provider_problems(row: dict[str, Any], thresholds: Thresholds) -> list[Problem]:
    """What is wrong with one ``pending_by_provider`` row."""
    name = row["provider"]
    found = []
    if row["state"] == ProviderState.AUTH_FAILED:
        found.append(
            Problem(
                CRITICAL,
                f"provider {name}: auth-failed ({row.get('last_error') or 'no detail'}); fix its "
                f"secret, then systemctl reload dropsync or dropsync resync {name}",
            )
        )
    age = row.get("oldest_age_s")
    if age is not None and age >= thresholds.pending_warn_s:
        level = CRITICAL if age >= thresholds.pending_crit_s else WARNING
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
        from dropsync.daemon.cli.status import describe_user

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


def disk_problems(store_path: Path, thresholds: Thresholds) -> list[Problem]:
    """Free space on the file system that holds the store."""
    try:
        usage = shutil.disk_usage(store_path.parent)
    except OSError as exc:
        return [Problem(WARNING, f"disk: cannot see the free space of {store_path.parent}: {exc}")]
    free_pct = 100.0 * usage.free / usage.total if usage.total else 100.0
    if free_pct >= thresholds.disk_warn_pct:
        return []
    level = CRITICAL if free_pct < thresholds.disk_crit_pct else WARNING
    limit = thresholds.disk_crit_pct if level == CRITICAL else thresholds.disk_warn_pct
    return [
        Problem(
            level,
            f"disk: {free_pct:.1f}% free on the file system of {store_path} "
            f"({usage.free // (1 << 20)} MiB; under {limit:g}%)",
        )
    ]


def check(explicit: str | None, thresholds: Thresholds) -> tuple[list[Problem], str]:
    """Every problem found, and the one-line summary for when there are none."""
    from dropsync.daemon.cli.common import existing_store
    from dropsync.daemon.cli.status import read_status
    from dropsync.daemon.config_file import store_path_of
    from dropsync.daemon.errors import DropsyncError
    from dropsync.store.errors import StoreError

    try:
        store_path = existing_store(explicit, store_path_of(explicit))
        summary = read_status(store_path)
    except (DropsyncError, StoreError, sqlite3.Error, OSError) as exc:
        return [Problem(CRITICAL, f"store: {exc}")], ""
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

        from dropsync.daemon.runstate import describe

        # A busy store or a full disk the daemon waits out, or a heartbeat gone quiet.
        for line in describe(daemon.get("runtime"), int(time.time() * 1000)):
            found.append(Problem(WARNING, line))
    for row in summary["providers"]:
        found += provider_problems(row, thresholds)
    found += disk_problems(store_path, thresholds)
    pending = sum(row["pending"] for row in summary["providers"])
    ok = (
        f"dropsync running (pid {daemon['pid'] or 'unknown'}); "
        f"{len(summary['providers'])} provider(s), {pending} pending, none older than "
        f"{thresholds.pending_warn_s:g} s; no dead letters"
    )
    return found, ok


def render(result: tuple[list[Problem], str]) -> tuple[str, int]:
    """The plugin's output (one line per problem, worst first) and its exit code."""
    found, ok = result
    if not found:
        return f"OK: {ok}", OK
    ordered = sorted(found, key=lambda p: -p.level)
    return "\n".join(f"{_NAMES[p.level]}: {p.text}" for p in ordered), ordered[0].level
