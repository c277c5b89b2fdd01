"""``dropsync status``: what is pending for each provider, and why.

Operators run this often, on big stores, while the daemon writes: it opens the
store read-only, asks only indexed questions (see ``store.queries.status_summary``)
and imports nothing it does not print with (no event loop, no orjson, not even
the full config: only ``[store]`` is read), so the whole command takes little
more than starting Python. ``tests/test_design_rules.py`` holds it to that.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dropsync.daemon.cli.common import EXIT_OK

HELP = "what is pending for each provider and why; inbox and file counts (read-only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json``."""
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def format_status(store_path: Path, summary: dict[str, Any]) -> str:
    """The human-readable ``status`` report."""
    from dropsync.daemon.clock import format_age, format_timestamp

    lines = [f"store {store_path} (schema {summary['schema_version']})"]
    providers = summary["providers"]
    if not providers:
        lines.append("providers: none configured")
    for row in providers:
        line = (
            f"  {row['provider']:<16} {row['state']:<12} pending {row['pending']:>8}  "
            f"oldest {format_age(row['oldest_enqueued_at'])}  "
            f"dead letters {row['dead_letters']}"
        )
        if row["state"] in ("backing-off", "offline") and row["next_attempt_at"]:
            line += f"  next attempt {format_timestamp(row['next_attempt_at'])}"
        if row.get("unconfirmed"):
            line += (
                f"  unconfirmed {row['unconfirmed']} batch(es), {row['unconfirmed_items']} "
                "record(s) (dropsync resync NAME --unconfirmed)"
            )
        if row["state"] != "online" and row["last_error"]:
            line += f"\n{'':20}last error: {row['last_error']}"
        if row.get("waiting"):
            line += f"\n{'':20}waiting: {row['waiting']}"
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


def run(args: argparse.Namespace) -> int:
    """Read-only, safe while the daemon runs.

    What the daemon waits for (``store busy``, ``disk full``) comes from its runtime
    state file (``daemon.runstate``), since the store may be what cannot be written.
    """
    import time

    from dropsync.daemon.config_file import store_path_of
    from dropsync.daemon.runstate import describe, read_runtime
    from dropsync.store.queries import status_summary
    from dropsync.store.readonly import open_readonly

    store_path = store_path_of(args.config)
    db = open_readonly(store_path)
    try:
        summary = status_summary(db)
    finally:
        db.close()
    daemon = read_runtime(store_path)
    if args.json:
        import json

        summary["daemon"] = daemon
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_status(store_path, summary))
        for line in describe(daemon, int(time.time() * 1000)):
            print(line)
    return EXIT_OK
