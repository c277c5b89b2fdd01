"""``dropsync run``: every part of the daemon under one anyio task group.

Start-up: take over signal handling (before anything else: see
``daemon.process.early_signals``), open and migrate the store, start the watcher, the inbox
applier and the providers, tell systemd ``READY=1``, then finish files a previous run
left in ``.processing/`` (and keep sweeping for interrupted ingests, see
``daemon.ingest.recovery``). SIGTERM/SIGINT: stop taking work; the transaction in progress
commits (store writes are shielded from cancellation) and the process exits 0; if
that takes longer than ``daemon.shutdown_grace_s`` it exits 1. SIGHUP: reload the
config; a bad one (a secret that cannot be read or could not work
included) is refused and logged, the old one keeps running; a SIGHUP before
the daemon is ready is kept for when it is.

A busy store or a full disk never ends the daemon: the work that needs the store
waits and tries again (``store.handle``), and ``PauseBoard`` shows it in the runtime
state file that ``dropsync status`` reads. Should such an error still escape a part
of the daemon, that part alone is restarted after a backoff.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import structlog
from dropsync.store import outbox
from dropsync.store.backoff import backoff_s
from dropsync.store.errors import StoreError, StoreRetryable
from dropsync.store.handle import Store, run_in_connection_thread
from dropsync.store.merge import MergeResult
from dropsync.store.queries import status_summary
from dropsync.store.states import ProviderState

from ..clock import now_ms
from ..config import Config, load_config
from ..delivery.providers import ProviderSupervisor, check_provider_options
from ..errors import ConfigError
from ..inbound.listener import Listener
from ..ingest.dropfiles import PROCESSING, collection_folders, list_entries
from ..ingest.inbox import InboxApplier
from ..ingest.ingestor import Ingestor, IngestReport
from ..ingest.recovery import Sweeper
from ..ingest.watcher import DropWatcher, candidate_files
from . import early_signals
from .health import PauseBoard
from .instance import InstanceLock
from .logs import configure_logging
from .memory import tune_garbage_collector
from .notify import Notifier, run_watchdog
from .retention import Retention
from .runstate import RuntimeFile
from .secrets import check_secrets
from .store_file import file_identity, wait_until_replaced

log = structlog.get_logger(__name__)

STATUS_EVERY_S = 30.0
# How long the STATUS= update waits for the store's figures before it goes out with the
# last ones it has (the pauses it names are known without the store).
STATUS_READ_S = 2.0


def summary_line(summary: dict[str, object]) -> str:
    """The one-line STATUS= text: pending per provider and which are not online."""
    providers = summary.get("providers")
    parts = []
    troubled = []
    if isinstance(providers, list):
        for row in providers:
            parts.append(f"{row['provider']}={row['pending']}")
            if row["state"] != ProviderState.ONLINE:
                troubled.append(f"{row['provider']} {row['state']}")
            # Lanes (users) a provider pauses one by one (``status_summary``'s paused_users).
            paused = row.get("paused_users")
            if paused:
                count = len(paused) if isinstance(paused, list) else paused
                troubled.append(f"{row['provider']} {count} user(s) paused")
    text = "pending " + (" ".join(parts) if parts else "none")
    if troubled:
        text += "; " + ", ".join(troubled)
    return text + f"; inbox {summary.get('inbox_pending', 0)}"


class Daemon:
    """The running daemon; ``run()`` returns the process exit code."""

    def __init__(
        self,
        config: Config,
        *,
        config_arg: str | None = None,
        dry_run: bool = False,
        exit_when_synced: bool = False,
        synced_also: Callable[[sqlite3.Connection], bool] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.config_arg = config_arg
        self.dry_run = dry_run
        self.exit_when_synced = exit_when_synced
        # With exit_when_synced: a further condition on the store (the demo waits for the
        # providers' confirmations and first pulls too).
        self.synced_also = synced_also
        self.on_ready = on_ready
        self.notifier = Notifier.from_environment()
        self.board = PauseBoard(RuntimeFile(config.store_path))
        self._status_due: anyio.Event | None = None  # made in the status loop (event loop)
        self.board.on_change = self._status_changed
        self._summary: dict[str, object] | None = None
        self.exit_code = 0
        self.ready = False
        self._overdue_timer: threading.Timer | None = None
        self._work: anyio.CancelScope | None = None  # made in run(): it needs the event loop
        self._opened: tuple[int, int] | None = None  # the store file opened (store_file)

    def _merged(self, result: MergeResult) -> None:
        if self.supervisor is not None and result.providers:
            self.supervisor.wake(result.providers)

    async def _ingest(self, path: Path) -> IngestReport | None:
        report = await self.ingestor.ingest_dropped(path)
        if report is not None and report.providers:
            self.supervisor.wake(report.providers)
        return report

    async def run(self) -> int:
        """Run until a stop signal (or, with ``exit_when_synced``, until all is delivered)."""
        self._work = work = anyio.CancelScope()
        wanted = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
        if os.environ.get("DROPSYNC_DEBUG_HOOKS") == "1":
            wanted.append(signal.SIGUSR2)
        try:
            # The first thing: from here on, signals are this daemon's to handle.
            with anyio.open_signal_receiver(*wanted) as signals:
                async with anyio.create_task_group() as outer:
                    outer.start_soon(self._signals, signals)
                    try:
                        with work:
                            await self._run_work()
                    finally:
                        outer.cancel_scope.cancel()
        finally:
            early_signals.ignore_all()  # the receiver's end restored the defaults
            self.board.close()
            self.notifier.close()
            if self._overdue_timer is not None:
                self._overdue_timer.cancel()
        log.info("daemon_stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _run_work(self) -> None:
        config = self.config
        tune_garbage_collector()
        instance = InstanceLock(config.store_path)
        instance.acquire()  # before the store is opened: two daemons never migrate one store
        try:
            self.board.set_state("starting")
            backups: list[Path] = []
            self.store = await Store.open(config.store_path, pauses=self.board, backups=backups)
            try:
                self._opened = file_identity(config.store_path)
            except OSError:
                self._opened = None
            for backup in backups:
                log.info(
                    "store_backed_up_before_migration",
                    store=str(config.store_path),
                    backup=str(backup),
                )
            try:
                await self._run_parts()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.store.close()
        finally:
            instance.release()

    async def _run_parts(self) -> None:
        config = self.config
        self.supervisor: ProviderSupervisor = ProviderSupervisor(
            self.store, config, dry_run=self.dry_run, on_merge=self._merged
        )
        self.ingestor = Ingestor(self.store, config, pauses=self.board)
        self.ingestor.on_merge = self._merged
        self.sweeper = Sweeper(self.ingestor)
        self.inbox = InboxApplier(
            self.store, config, self._merged, on_external_change=self.supervisor.wake_all
        )
        self.watcher = DropWatcher(config, self._ingest, pauses=self.board)
        self.retention = Retention(self.store, config)
        self.listener: Listener | None = None
        if config.listener is not None:
            self.listener = Listener(
                self.store,
                config,
                wake=self.supervisor.wake,
                adapter=self.supervisor.adapter,
                pauses=self.board,
                readiness=self.board.not_ready,
            )
            self.supervisor.listener_options = self.listener.adapter_options
        log.info(
            "daemon_starting",
            store=str(config.store_path),
            drop=str(config.drop_path),
            config=config.source,
            providers=sorted(config.providers),
            pid=os.getpid(),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.board.heartbeat)
            tg.start_soon(self._stop_when_store_replaced)
            tg.start_soon(self._keep, "watcher", self.watcher.run)
            tg.start_soon(self._keep, "inbox", self.inbox.run)
            tg.start_soon(self._keep, "providers", self.supervisor.run)
            if self.listener is not None:
                tg.start_soon(self._keep, "listener", self.listener.run)
            await self.watcher.ready.wait()
            await self._note_unconfigured()
            self.ready = True
            self.board.set_state("running")
            self.notifier.ready(status="started")
            log.info("daemon_ready")
            if self.on_ready is not None:
                self.on_ready()
            tg.start_soon(run_watchdog, self.notifier)
            # Files a killed run left half done are finished after READY, so a large one
            # cannot hold up start-up.
            tg.start_soon(self._keep, "recovery", self._recover)
            tg.start_soon(self._keep, "status", self._status_loop)
            tg.start_soon(self._keep, "retention", self.retention.run)
            if self.exit_when_synced:
                tg.start_soon(self._exit_when_synced)
            if early_signals.reload_pending():
                await self._reload()

    async def _keep(self, work: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a part of the daemon; should the store's unavailability escape it, restart it."""
        failures = 0
        while True:
            try:
                await run()
                return
            except StoreRetryable as exc:
                failures += 1
                delay = backoff_s(failures)
                self.board.paused(work, exc.condition, str(exc), delay)
                await anyio.sleep(delay)
                self.board.resumed(work, exc.condition)
                log.info("work_restarted", work=work)

    async def _recover(self) -> None:
        """Sweep for interrupted ingests now, then every rescan (sooner after a failure)."""
        at_start = True
        while True:
            sweep_soon = anyio.Event()
            self.watcher.on_failure = sweep_soon.set
            for report in await self.sweeper.sweep(at_start=at_start):
                self._merged(MergeResult(providers=report.providers))
            at_start = False
            wait = self.config.rescan_s
            due = self.sweeper.retries.next_due_in()
            if due is not None:
                wait = min(wait, due + 0.01)
            with anyio.move_on_after(wait):
                await sweep_soon.wait()
                await anyio.sleep(1.0)  # a failed file is first retried after 1 s

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if self._overdue_timer is not None:
                    # Stopping: the parts are ending and the store is closing under a reload.
                    log.info("config_reload_skipped", reason="the daemon is stopping")
                elif self.ready:
                    await self._reload()
                else:
                    log.info("config_reload_deferred", reason="the daemon is still starting")
                    early_signals.hup_received()
            elif signum == signal.SIGUSR2:
                log.warning("debug_block_event_loop", seconds=5)
                time.sleep(5)  # noqa: ASYNC251 -- deliberately blocks the loop (watchdog tests)
            elif self._overdue_timer is None:
                self._stop(signal.Signals(signum).name)
            else:
                log.info("daemon_already_stopping", signal=signal.Signals(signum).name)

    async def _stop_when_store_replaced(self) -> None:
        """Stop, exit code 2 (not restarted), once the store's path names another file or
        none (``store_file``: a copy of what the daemon holds is kept beside it)."""
        await wait_until_replaced(self.store, self.config.store_path, self._opened)
        self.exit_code = 2
        self._stop("the store file was removed or replaced")

    def _stop(self, reason: str) -> None:
        self.notifier.stopping()
        self.board.state = "stopping"
        log.info("daemon_stopping", reason=reason, grace_s=self.config.shutdown_grace_s)
        if self._overdue_timer is None:
            self._overdue_timer = threading.Timer(self.config.shutdown_grace_s, _overdue)
            self._overdue_timer.daemon = True
            self._overdue_timer.start()
        if self._work is not None:
            self._work.cancel()

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            config = load_config(self.config_arg)
            check_provider_options(config)
            check_secrets(config)  # as check-config does: a secret that cannot work is refused
        except ConfigError as exc:
            log.error("config_reload_failed", error=str(exc))
            self.board.refused_reload(str(exc))  # status, status --check and STATUS= show it
            self.notifier.ready(status=self._status_text())
            return
        if config.store_path != self.config.store_path:
            log.warning(
                "config_store_path_ignored",
                reason="changing [store] path needs a restart",
                path=str(config.store_path),
            )
        configure_logging(config.log_level)
        self.config = config
        self.ingestor.config = config
        self.inbox.config = config
        self.watcher.config = config
        self.retention.config = config
        await self.store.transact(outbox.resume_refused_providers, now=now_ms())
        if self.listener is not None:
            self.listener.reload(config)
        self.supervisor.reload(config)
        await self._note_unconfigured()
        log.info("config_reloaded", config=config.source, providers=sorted(config.providers))
        self.board.refused_reload(None)
        self.notifier.ready(status="reloaded")

    async def _note_unconfigured(self) -> None:
        """Tell status which providers the store has entries for and the config no longer
        names (removed or renamed): their entries stay queued, nothing sends them."""
        # On the read-only connection, as the status figures: never behind a held write lock.
        names = None
        with anyio.move_on_after(STATUS_READ_S):
            try:
                async with self.store.snapshot() as reader:
                    names = await run_in_connection_thread(reader, outbox.provider_names)
            except (StoreError, sqlite3.Error, OSError) as exc:
                log.debug("provider_names_unavailable", error=str(exc))
        if names is not None:
            configured = self.config.providers
            self.board.providers_unconfigured([n for n in names if n not in configured])

    def _status_changed(self) -> None:
        """A pause began or ended, or a reload was refused: STATUS= now, not at the next tick."""
        if self._status_due is not None:
            self._status_due.set()

    def _status_text(self) -> str:
        """STATUS=: what the daemon waits for (pauses, a refused reload), then the figures."""
        figures = "pending unknown yet" if self._summary is None else summary_line(self._summary)
        waits = self.board.status_text()
        return f"{waits}; {figures}" if waits else figures

    async def _status_loop(self) -> None:
        """STATUS= every STATUS_EVERY_S, and at once when the pauses change.

        The figures are read on the store's read-only connection, never behind the writer:
        while another program holds the store's write lock, the writer waits (and pauses),
        and the update that names that pause must not wait with it.
        """
        while True:
            self._status_due = due = anyio.Event()
            with anyio.move_on_after(STATUS_READ_S):
                try:
                    async with self.store.snapshot() as reader:
                        summary = await run_in_connection_thread(reader, status_summary)
                    self._summary = summary
                    self.board.providers_unconfigured(
                        [
                            row["provider"]
                            for row in summary["providers"]
                            if row["provider"] not in self.config.providers
                        ]
                    )
                except (StoreError, sqlite3.Error, OSError) as exc:
                    # The last figures stay; what waits and why is known without them.
                    log.debug("status_figures_unavailable", error=str(exc))
            self.notifier.status(self._status_text())
            with anyio.move_on_after(STATUS_EVERY_S):
                await due.wait()

    async def _exit_when_synced(self) -> None:
        while True:
            await anyio.sleep(0.2)
            if candidate_files(self.config.drop_path, limit=1) or any(
                list_entries(folder / PROCESSING)
                for folder in collection_folders(self.config.drop_path)
            ):
                continue
            summary = await self.store.call(status_summary)
            providers = summary["providers"]
            if (
                summary["inbox_pending"] == 0
                and all(p["pending"] == 0 for p in providers)
                and (self.synced_also is None or await self.store.call(self.synced_also))
            ):
                log.info("synced", providers=[p["provider"] for p in providers])
                self._stop("synced")
                return


def _overdue() -> None:
    log.error("shutdown_overdue", reason="the current work did not finish within the grace")
    os._exit(1)
