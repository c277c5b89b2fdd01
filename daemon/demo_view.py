"""What ``dropsync demo`` shows: live progress on a terminal, the offline step, the summary.

On a terminal the daemon's log lines go to ``<dir>/dropsync-demo.log`` and a block of
lines is redrawn in place twice a second: records per collection, and per provider its
state, pending entries and what it accepted, confirmed and dead-lettered (and the lines
the kinds' demo parts add). Once all is synced the summary is printed, and (when the demo
keeps running and stdin is a terminal too) one step shows what the product is for: the
provider of the part with an ``OfflineStep`` is taken offline while more records are
dropped (the outbox holds them), then brought back (it drains). Elsewhere (CI, a pipe) the
log lines are the output, and only the summary is added.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Any, TextIO

from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.demo import DemoPart, OfflineStep
from dropsync.store.queries import progress_summary
from dropsync.store.readonly import open_readonly

_EVERY_S = 0.5
_STEPS = 3  # take it offline, offline, back


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class DemoView:
    """The demo's screen; ``start`` (once the daemon is ready), ``stop``, ``summary``."""

    def __init__(
        self,
        directory: Path,
        config_path: Path,
        store_path: Path,
        servers: Mapping[str, EmulatorServer],
        parts: Mapping[str, DemoPart],
        *,
        keeps_running: bool,
        out: IO[str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.directory = directory
        self.config_path = config_path
        self.store_path = store_path
        self.servers = servers
        self.parts = parts
        self.pulled = {collection for part in parts.values() for collection in part.pulled}
        # The provider taken offline in the offline step, and its step.
        offline = [(name, part.offline) for name, part in parts.items() if part.offline]
        self.offline: tuple[str, OfflineStep] | None = offline[0] if offline else None
        self.out = out or sys.stdout
        # Live drawing, prompts and log lines kept in a file: only with a terminal to draw on.
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.prompts = (
            self.interactive and keeps_running and sys.stdin.isatty() and self.offline is not None
        )
        self.log_path = directory / "dropsync-demo.log"
        self._stop = threading.Event()
        self._enter = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = 0  # lines of the live block on screen
        self._step = -1  # -1: syncing; then a step of the offline step; _STEPS: done
        self._said_synced = False

    def log_file(self) -> TextIO:
        """Where the daemon's log lines go while the screen shows progress."""
        return self.log_path.open("a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> None:
        """Print permanent lines (above the live block)."""
        self.out.write(text + "\n")
        self.out.flush()

    def intro(self) -> None:
        """Where everything is, before it starts."""
        self.write(f"dropsync demo in {self.directory}")
        for name, server in self.servers.items():
            self.write(f"  {name + ' emulator':<24} {server.base_url}")
        if self.interactive:
            self.write(f"  {'log lines':<24} {self.log_path}")
        self.write("")

    def start(self) -> None:
        """The daemon is ready: draw from now on (terminal only)."""
        if self.interactive and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="demo-view", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop drawing (the last frame stays on screen)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                if db is None:
                    db = open_readonly(self.store_path)
                progress = progress_summary(db)
                self._advance(progress)
                self._draw(progress)
                self._stop.wait(_EVERY_S)
        finally:
            if db is not None:
                db.close()

    def _advance(self, progress: dict[str, Any]) -> None:
        """The offline step's state machine, driven by what the store shows."""
        if self._step == -1 and is_synced(progress, self.pulled):
            self._said_synced = True
            self._clear()
            self.write(self.summary_text(progress, synced=True))
            self._step = 0 if self.prompts else _STEPS
            if self.prompts:
                threading.Thread(target=self._wait_for_enter, daemon=True).start()
            return
        if self.offline is None:
            return
        name, step = self.offline
        if self._step == 0 and self._enter.is_set():
            self._enter.clear()
            from .demo import write_samples

            self.servers[name].stop()
            write_samples(self.store_path.parent / "drop", step.late)
            self._step = 1
            threading.Thread(target=self._wait_for_enter, daemon=True).start()
        elif self._step == 1 and self._enter.is_set():
            self._enter.clear()
            self.servers[name].start()
            self._step = 2
        elif self._step == 2 and progress["providers"][name]["pending"] == 0:
            self._clear()
            self.write(step.done)
            self._step = _STEPS

    def _wait_for_enter(self) -> None:
        try:
            sys.stdin.readline()
        except (OSError, ValueError):
            return
        self._drawn += 1  # the terminal echoed the Enter: one more line to redraw
        self._enter.set()

    def _clear(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self, progress: dict[str, Any]) -> None:
        lines = progress_lines(progress, self.parts.values())
        if self.offline is not None and 0 <= self._step < _STEPS:
            step = self.offline[1]
            lines.append((step.take_offline, step.offline, step.back)[self._step])
        # A line wider than the terminal would wrap, and the redraw would miscount.
        width = max(shutil.get_terminal_size().columns - 1, 20)
        lines = [line if len(line) <= width else line[: width - 1] + "…" for line in lines]
        self._clear()
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)

    def summary(self, *, synced: bool) -> list[str]:
        """After the daemon stopped: the summary (unless it was shown already).

        Returns what did not get where it was going (``shortfall_lines``): the demo fails
        on any, and the last lines it prints name them.
        """
        try:
            db = open_readonly(self.store_path)
        except Exception:  # the daemon never got as far as creating the store
            return []
        try:
            progress = progress_summary(db)
        finally:
            db.close()
        missing = shortfall_lines(progress["shortfalls"])
        if not (self._said_synced and self.interactive):
            self.write(self.summary_text(progress, synced=synced))
        elif missing:
            self.write("\n".join([_shortfall_heading(synced=True), *missing]) + "\n")
        return missing

    def summary_text(self, progress: dict[str, Any], *, synced: bool) -> str:
        """Where the data went, the status command for this demo, and queries to try."""
        store = self.store_path
        records = progress["records"]
        files = progress["files"]
        missing = shortfall_lines(progress["shortfalls"])
        if missing:
            heading = [_shortfall_heading(synced=synced), *missing]
        else:
            heading = ["dropsync demo: " + ("everything is synced." if synced else "stopped.")]
        lines = [
            *heading,
            "",
            "Where the data went:",
            f"  {'the store (SQLite)':<24} {store}: {_plural(sum(records.values()), 'record')} in "
            f"{_plural(len(records), 'collection')}",
            f"  {'the drop files':<24} {store.parent / 'drop'}/<collection>/.done/: "
            f"{_plural(files.get('done', 0), 'file')} done, "
            f"{files.get('quarantined', 0)} quarantined",
        ]
        for name, row in progress["providers"].items():
            server = self.servers.get(name)
            where = server.base_url if server is not None else ""
            sent = row["accepted"] + row["confirmed"]
            what = f"{_plural(sent, 'record')} delivered"
            if row["confirmed"]:
                what += f", {row['confirmed']} of them confirmed by the provider"
            part = self.parts.get(name)
            if part is not None and part.summary is not None:
                what = part.summary(row, progress, what)
            lines.append(f"  {name + ' emulator':<24} {where}: {what}")
        lines += [
            "",
            "See for yourself (the demo keeps its config in its folder):",
            f"  dropsync status --config {self.config_path}",
        ]
        if progress["shortfalls"]["dead_letters"]:
            lines.append(f"  dropsync dead-letters list --config {self.config_path}")
        lines += [
            f"  sqlite3 -readonly {store} \\",
            '    "SELECT provider, state, pending, dead_letters FROM pending_by_provider"',
            f"  sqlite3 -readonly {store} \\",
            '    "SELECT collection, COUNT(*) FROM records GROUP BY collection"',
        ]
        for part in self.parts.values():
            for query in part.queries:
                lines += [f"  sqlite3 -readonly {store} \\", f'    "{query}"']
        if self.interactive:
            lines.append(f"Log lines: {self.log_path}")
        return "\n".join(lines) + "\n"


def _shortfall_heading(*, synced: bool) -> str:
    return "dropsync demo: " + ("synced" if synced else "stopped") + ", but not everything arrived:"


def _clip(text: str | None, width: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def shortfall_lines(shortfalls: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per provider with dead letters, per file with rejections, per collection
    with rejected inbox rows (``store.queries.shortfalls``); none when everything arrived."""
    lines = [
        f"  {row['provider']}: {_plural(row['count'], 'dead letter')} "
        f"(latest: {_clip(row['reason'])})"
        for row in shortfalls["dead_letters"]
    ]
    for row in shortfalls["files"]:
        what = "quarantined"
        if row["docs_rejected"]:
            what = f"{_plural(row['docs_rejected'], 'document')} rejected"
            if row["status"] == "quarantined":
                what += ", the file quarantined"
        lines.append(f"  {row['collection']}/{row['name']}: {what} ({_clip(row['error'])})")
    lines += [
        f"  inbox {row['collection'] or '(no collection)'}: "
        f"{_plural(row['count'], 'row')} rejected (latest: {_clip(row['reason'])})"
        for row in shortfalls["inbox_rejected"]
    ]
    return lines


def is_synced(progress: Mapping[str, Any], pulled: Collection[str]) -> bool:
    """Nothing pending anywhere, confirmations in, and the ``pulled`` collections filled."""
    providers = progress["providers"].values()
    filled = {c for c, n in progress["records"].items() if n} >= set(pulled)
    return bool(
        providers
        and all(row["pending"] == 0 for row in providers)
        and progress["inbox_pending"] == 0
        and progress["unsettled"] == 0
        and not progress["requests"].get("pending")
        and filled
    )


def progress_lines(progress: Mapping[str, Any], parts: Collection[DemoPart] = ()) -> list[str]:
    """The live block: records, then one line per provider, then the parts' lines."""
    records = progress["records"]
    listed = ", ".join(f"{name} {count}" for name, count in sorted(records.items()))
    lines = [
        f"{time.strftime('%H:%M:%S')}  records {sum(records.values())}"
        + (f" ({listed})" if listed else ""),
        f"  {'provider':<14} {'state':<12} {'pending':>7} {'accepted':>9} {'confirmed':>10} "
        f"{'dead letters':>13}",
    ]
    for name, row in progress["providers"].items():
        lines.append(
            f"  {name:<14} {row['state']:<12} {row['pending']:>7} {row['accepted']:>9} "
            f"{row['confirmed']:>10} {row['dead_letters']:>13}"
        )
    for part in parts:
        line = None if part.progress_line is None else part.progress_line(progress)
        if line is not None:
            lines.append(line)
    return lines
