"""``dropsync status``: is the daemon running, what is pending for each provider, and why.

Operators run this often, on big stores, while the daemon writes: it opens the
store read-only, asks only indexed questions (see ``store.queries.status_summary``)
and imports nothing it does not print with (no event loop, no orjson, not even
the full config: only ``[store]`` is read; its usual command lines not even argparse,
see ``cli.shortcut``), so the whole command takes little more than starting Python.
``tests/test_design_rules.py`` holds it to that.

``--check`` answers like a monitoring plugin (``daemon/cli/health_check.py``): a
status line with perfdata, one line per further problem, exit 0 ok, 1 warning, 2
critical, 3 unknown (the check cannot run: a usage error included, see
``usage_error``). ``--watch`` repeats the report until Ctrl-C.
"""

from __future__ import annotations

import math
import sys

from .common import EXIT_OK

TYPE_CHECKING = False  # typing's, without importing typing (status starts fast)
if TYPE_CHECKING:
    import argparse
    import sqlite3
    from os import PathLike
    from typing import Any

HELP = "is the daemon running; what is pending for each provider and why (read-only)"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds(text: str) -> float:
    value = _number(text)
    if value is None or not value > 0:
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _percent(text: str) -> float:
    value = _number(text)
    if value is None or not 0 <= value <= 100:
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(f"expected a percentage from 0 to 100, got {text!r}")
    return value


def usage_error(words: list[str], message: str) -> int | None:
    """``status --check`` with a bad command line: UNKNOWN, exit 3, as a plugin answers.

    Called by the CLI after argparse reported ``message`` on stderr (exit 2 otherwise).
    """
    if "--check" not in words:
        return None
    from .health_check import render_unknown

    text, code = render_unknown(f"usage: {message}")
    print(text, flush=True)
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json``, ``--watch``, ``--check`` and its thresholds."""
    from .health_check import Thresholds

    default = Thresholds()  # as cli.shortcut has them
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_seconds,
        metavar="SECONDS",
        help="show the report again every SECONDS (default 2) until Ctrl-C",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="monitoring-plugin mode: a status line with perfdata, a line per further problem; "
        "exit 0 ok, 1 warning, 2 critical, 3 unknown",
    )
    parser.add_argument(
        "--pending-warn",
        type=_seconds,
        default=default.pending_warn_s,
        metavar="SECONDS",
        help=f"--check: warning when the oldest pending entry is older "
        f"(default {default.pending_warn_s:g})",
    )
    parser.add_argument(
        "--pending-crit",
        type=_seconds,
        default=default.pending_crit_s,
        metavar="SECONDS",
        help=f"--check: critical when the oldest pending entry is older "
        f"(default {default.pending_crit_s:g})",
    )
    parser.add_argument(
        "--disk-warn",
        type=_percent,
        default=default.disk_warn_pct,
        metavar="PERCENT",
        help=f"--check: warning when the store's file system has less free space "
        f"(default {default.disk_warn_pct:g})",
    )
    parser.add_argument(
        "--disk-crit",
        type=_percent,
        default=default.disk_crit_pct,
        metavar="PERCENT",
        help=f"--check: critical when the store's file system has less free space "
        f"(default {default.disk_crit_pct:g})",
    )


def format_status(store_path: str | PathLike[str], summary: dict[str, Any]) -> str:
    """The human-readable ``status`` report."""
    from dropsync.store import state_values as states

    from ..clock import format_age, format_timestamp

    waiting = (states.PROVIDER_BACKING_OFF, states.PROVIDER_OFFLINE)

    lines = [
        _daemon_line(summary.get("daemon")),
        *_waiting_lines(summary.get("daemon")),
        f"store {store_path} (schema {summary['schema_version']})",
    ]
    providers = summary["providers"]
    if not providers:
        lines.append("providers: none configured")
    for row in providers:
        unconfigured = row.get("configured") is False
        state = "unconfigured" if unconfigured else row["state"]
        line = (
            f"  {row['provider']:<16} {state:<12} pending {row['pending']:>8}  "
            f"oldest {format_age(row['oldest_enqueued_at'])}  "
            f"dead letters {row['dead_letters']}"
        )
        if row.get("held"):
            line += f"  set aside {row['held']} (for paused users)"
        if row["state"] in waiting and row["next_attempt_at"] and not unconfigured:
            line += f"  next attempt {format_timestamp(row['next_attempt_at'])}"
        if row.get("unconfirmed"):
            line += (
                f"  unconfirmed {row['unconfirmed']} batch(es), {row['unconfirmed_items']} "
                "record(s) (dropsync resync NAME --unconfirmed)"
            )
        if row["state"] != states.PROVIDER_ONLINE and row["last_error"]:
            line += f"\n{'':20}last error: {row['last_error']}"
        if row.get("waiting"):
            line += f"\n{'':20}waiting: {row['waiting']}"
        if unconfigured:
            line += (
                f"\n{'':20}not configured in the running daemon (removed or renamed): its "
                "entries stay queued until a provider of this name is configured again"
            )
        line += _paused_users(row.get("paused_users") or [])
        lines.append(line)
    files = summary["files"]
    lines.append(
        f"inbox pending {summary['inbox_pending']}; files done {files['done']}, "
        f"quarantined {files['quarantined']}, in progress {files['processing']}"
    )
    for row in summary["recent_quarantined"]:
        lines.append(f"  quarantined: {row['path']}: {row['error']}")
    for row in summary.get("integration_errors", []):
        what = row["error"] or (row["body"] or "").strip().replace("\n", " | ")
        lines.append(
            f"  integration errors ({row['provider']}, {format_timestamp(row['fetched_at'])}): "
            f"{what}"
        )
    return "\n".join(lines)


PAUSED_USERS_LISTED = 10  # per provider, in the text report
MORE_USERS = "SELECT * FROM provider_users WHERE state <> 'active'"


def describe_user(user: dict[str, Any]) -> str:
    """One paused user (a lane of ``provider_users``) in words: who, since when, why, and
    how many entries wait for them."""
    from dropsync.store import state_values as states

    from ..clock import format_timestamp

    since = f" since {format_timestamp(user['since'])}" if user.get("since") else ""
    state = "no token" if user["state"] == states.LANE_NO_TOKEN else user["state"]
    text = f"{user['user']} ({state}{since}, {user['pending']} pending)"
    if user["state"] == states.LANE_AUTH_FAILED and user.get("reason"):
        text += f": {user['reason']}"
    return text


def _paused_users(users: list[dict[str, Any]]) -> str:
    """The lines under a provider naming its paused users."""
    text = "".join(f"\n{'':20}paused user {describe_user(u)}" for u in users[:PAUSED_USERS_LISTED])
    if len(users) > PAUSED_USERS_LISTED:
        text += f"\n{'':20}... {len(users) - PAUSED_USERS_LISTED} more: {MORE_USERS}"
    return text


def _daemon_line(daemon: dict[str, Any] | None) -> str:
    if daemon is None:
        return "daemon: unknown"
    if daemon["running"]:
        return f"daemon: running (pid {daemon['pid'] or 'unknown'})"
    return (
        "daemon: NOT RUNNING (no process holds the store's lock); the figures below are what "
        "it left behind and may be stale"
    )


def daemon_state(store_path: str | PathLike[str]) -> dict[str, Any]:
    """Whether a daemon runs on ``store_path`` (its instance lock), for the report."""
    from ..process.instance import holder, lock_path
    from ..process.runstate import read_runtime

    pid = holder(store_path)
    return {
        "running": pid is not None,
        "pid": pid or None,
        "lock": str(lock_path(store_path)),
        "stale": pid is None,
        # What the daemon waits for (``store busy``, ``disk full``): its runtime state file
        # (``daemon.process.runstate``), since the store may be what cannot be written.
        "runtime": read_runtime(store_path),
    }


def read_status(store_path: str | PathLike[str]) -> dict[str, Any]:
    """Everything the report shows: the store's summary and the daemon's state."""
    from dropsync.store.queries import status_summary

    db = open_for_reading(store_path)
    try:
        summary = status_summary(db)
    finally:
        db.close()
    summary["daemon"] = daemon_state(store_path)
    _mark_configured(summary)
    return summary


def open_for_reading(store_path: str | PathLike[str]) -> sqlite3.Connection:
    """The store opened read-only (``store.readonly``); an older schema that a process is
    migrating now is said to be, with that process's pid."""
    from dropsync.store.readonly import open_readonly

    try:
        return open_readonly(store_path)
    except Exception as exc:
        from dropsync.store.errors import SchemaTooOld  # on a failure only: status starts fast

        if isinstance(exc, SchemaTooOld):
            raise _being_migrated(store_path, exc) or exc from None
        raise


def _being_migrated(store_path: str | PathLike[str], exc: Any) -> Exception | None:
    """The error to show when the process holding the store's lock (``dropsync migrate``,
    or the daemon at its start) is migrating its older schema; None if nobody holds it."""
    from dropsync.store.errors import StoreError

    from ..process.instance import holder, lock_path

    pid = holder(store_path)
    if pid is None:
        return None
    return StoreError(
        f"store {store_path} is being migrated from schema version {exc.version} to "
        f"{exc.latest} by pid {pid or 'unknown'} (it holds {lock_path(store_path)}): "
        "ask again when it is done"
    )


def _mark_configured(summary: dict[str, Any]) -> None:
    """``configured`` on each provider row while a daemon runs: False for a provider its
    running config no longer names (removed or renamed by a reload), None if not listed."""
    daemon = summary["daemon"]
    runtime = daemon.get("runtime")
    if not daemon["running"] or not isinstance(runtime, dict):
        return
    unconfigured = runtime.get("unconfigured") or []
    more = bool(runtime.get("unconfigured_not_listed"))
    for row in summary["providers"]:
        if row["provider"] in unconfigured:
            row["configured"] = False
        else:
            row["configured"] = None if more else True


def _report(args: argparse.Namespace) -> tuple[str, int]:
    """The text to print and the exit code, once."""
    from ..config_file import store_path_of
    from .common import existing_store

    if args.check:
        from .health_check import (
            Thresholds,
            Unknown,
            check,
            render,
            render_unknown,
        )

        thresholds = Thresholds(
            pending_warn_s=args.pending_warn,
            pending_crit_s=args.pending_crit,
            disk_warn_pct=args.disk_warn,
            disk_crit_pct=args.disk_crit,
        )
        try:
            return render(check(args.config, thresholds))
        except Unknown as exc:
            return render_unknown(str(exc))
        except Exception as exc:  # a defect: a plugin still answers, UNKNOWN
            return render_unknown(f"the check failed: {type(exc).__name__}: {exc}")
    store_path = existing_store(args.config, store_path_of(args.config))
    summary = read_status(store_path)
    if args.json:
        from ..simple_json import dumps

        return dumps(summary), EXIT_OK
    return format_status(store_path, summary), EXIT_OK


def _waiting_lines(daemon: dict[str, Any] | None) -> list[str]:
    """What a running daemon waits for (a busy store, a full disk), from its runtime file."""
    import time

    from ..process.runstate import describe

    if daemon is None or not daemon["running"]:
        return []
    return describe(daemon.get("runtime"), int(time.time() * 1000))


def run(args: argparse.Namespace) -> int:
    """Read-only, safe while the daemon runs."""
    if args.watch is None:
        text, code = _report(args)
        try:
            print(text, flush=True)
        except BrokenPipeError:  # `status --check | head -1` keeps the check's exit code
            from .outcome import silence_stdout

            silence_stdout()
        return code
    return _watch(args)


def _passing(exc: Exception) -> bool:
    """Whether ``exc`` is the store (or its config) failing to answer, not a defect."""
    from dropsync.store.errors import StoreError

    from ..errors import DropsyncError

    return isinstance(exc, (StoreError, DropsyncError, OSError))


def _watch(args: argparse.Namespace) -> int:
    """The report again every ``args.watch`` seconds; Ctrl-C ends it (exit 0)."""
    import time

    clear = sys.stdout.isatty()
    shown = False
    try:
        while True:
            try:
                text, _ = _report(args)
            except Exception as exc:
                # After a first report, what cannot be read now (a migration under way, a
                # store being restored) is this turn's report: watching goes on.
                if not shown or not _passing(exc):
                    raise
                text = f"dropsync: {exc}"
            shown = True
            stamp = time.strftime("%H:%M:%S")
            header = f"dropsync status, every {args.watch:g} s (Ctrl-C to stop), {stamp}"
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(f"{header}\n{text}\n", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK
