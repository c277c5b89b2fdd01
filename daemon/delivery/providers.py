"""Running the configured providers: one flusher (and puller, for two-way kinds) each.

On reload every provider task is restarted with the new config; the outbox and
provider states live in the store, so nothing is lost by the restart. Each provider's
health (``daemon.delivery.provider_health``: its state, waits and failures) is kept here for as
long as the daemon runs, shared by its flusher and its pull loop, and outlives reloads.

A provider with lanes (``adapters.base.Laned``) is pulled lane by lane: a lane whose
credentials are refused waits alone (``daemon.delivery.lanes``), a lane whose credentials just
changed is pulled at once, the others every ``pull_interval_s``. A provider whose
credentials change while it runs (``adapters.base.LiveCredentials``) has them watched
(``daemon.process.credentials``) and handed over without a reload.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog
from dropsync.adapters.base import (
    CredentialUpdate,
    JSONObject,
    Laned,
    LiveCredentials,
    NeedsCollections,
    NeedsLookup,
    Provider,
    PullPage,
    StreamPuller,
)
from dropsync.adapters.errors import AuthError, ProviderError
from dropsync.adapters.proxy import proxy_secrets
from dropsync.adapters.registry import OptionError, build_provider, get_kind, parse_options
from dropsync.store import callbacks, cursors, outbox, pulled
from dropsync.store.handle import Store
from dropsync.store.merge import Change, MergeResult, apply_changes

from .. import metrics
from ..clock import now_ms
from ..config import Config, ProviderConfig
from ..config_file import resolved
from ..errors import ConfigError, SecretError
from ..places import check_outside_drop
from ..process.credentials import CredentialWatch
from ..process.logs import redact_in_logs
from ..process.secrets import load_secret, other_secrets, remember_secrets
from .flusher import Flusher
from .provider_health import Flow, ProviderHealth
from .pulls import StreamPull, to_changes
from .requests import answer_recorder, set_routes

__all__ = ["ProviderSupervisor", "check_provider_options", "open_provider"]

log = structlog.get_logger(__name__)


def check_provider_options(config: Config) -> None:
    """Validate each provider's kind-specific options (raises ConfigError naming the key),
    and that no collection is routed to a provider that never sends."""
    for provider in config.providers.values():
        try:
            parse_options(provider.kind, provider.options)
        except OptionError as exc:
            raise ConfigError(
                config.source, f"providers.{provider.name}.{exc.key}", exc.problem
            ) from None
        prefix = f"providers.{provider.name}"
        kind = get_kind(provider.kind)
        for key in kind.path_options:
            value = provider.options.get(key)
            if isinstance(value, str) and value:
                try:
                    folder = Path(resolved(value))
                except ValueError as exc:
                    raise ConfigError(config.source, f"{prefix}.{key}", str(exc)) from None
                check_outside_drop(config.source, f"{prefix}.{key}", key, folder, config.drop_path)
        secret_files = [(provider.secret, "secret_file")] + [
            (provider.kind_secrets.get(secret.name), secret.keys[1]) for secret in kind.secrets
        ]
        for ref, key in secret_files:
            if ref is not None and ref.file is not None:
                check_outside_drop(
                    config.source, f"{prefix}.{key}", key, ref.file, config.drop_path
                )
        required = get_kind(provider.kind).requires_secret(provider.options)
        if provider.secret is None and required is not None:
            raise ConfigError(
                config.source,
                f"providers.{provider.name}.secret_env",
                f"missing; {required} is required (secret_env, secret_file or credential)",
            )
    for collection in config.collections.values():
        for name in collection.providers:
            provider = config.providers[name]
            if not get_kind(provider.kind).pushes(provider.options):
                raise ConfigError(
                    config.source,
                    f"collections.{collection.name}.providers",
                    f"routes collection {collection.name!r} to provider {name!r}, which is "
                    "read_only = true and never sends: its records would stay pending "
                    f"forever; remove {name!r} from the list (its pulls still land in the "
                    "store) or set read_only = false",
                )


def provider_options(config: ProviderConfig) -> dict[str, object]:
    """The provider's kind options, its relative paths resolved as the config's are."""
    options = dict(config.options)
    for key in get_kind(config.kind).path_options:
        value = options.get(key)
        if isinstance(value, str) and value:
            options[key] = resolved(value)
    return options


def confirm_timeouts(config: Config) -> dict[str, int | None]:
    """Per provider, how long an accepted batch may wait for its confirmation (ms), for the
    providers whose deliveries are confirmed by a callback the listener receives (their
    kind's ``confirmed_by_callback``); else None."""
    timeouts: dict[str, int | None] = {}
    for provider in config.providers.values():
        confirms = config.listener is not None and get_kind(provider.kind).confirms(
            set(provider.kind_secrets)
        )
        timeouts[provider.name] = int(provider.confirm_timeout_s * 1000) if confirms else None
    return timeouts


def collection_timestamps(config: Config) -> dict[str, str]:
    """Each configured collection's LWW timestamp field, for the adapters that need it."""
    return {name: c.timestamp for name, c in config.collections.items() if c.timestamp}


def open_provider(
    config: ProviderConfig, *, listener_options: Mapping[str, Any] | None = None
) -> Provider:
    """Build the adapter for ``config``, reading its secret (errors name the source only).

    ``listener_options``: what the listener tells this provider's adapter, added to its
    options (the URL of its kind's webhook, ``Inbound.adapter_options``). Every secret
    value of the provider (its token, its kind's own: a callback secret, a webhook token)
    is removed from what the adapter says, and from every log line too (a second net
    behind the adapter's own).
    """
    secret, values = load_secret(config)
    extra = other_secrets(config)
    redact_in_logs([*values, *extra, *proxy_secrets()])
    options = {**provider_options(config), **(listener_options or {})}
    return build_provider(
        name=config.name,
        kind=config.kind,
        base_url=config.base_url,
        options=options,
        secret=secret,
        timeout_s=config.timeout_s,
        batch_max_items=config.batch_max_items,
        also_secret=extra,
    )


class ProviderSupervisor:
    """Owns the provider tasks; ``wake`` nudges flushers when new entries are queued."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        dry_run: bool = False,
        on_merge: Callable[[MergeResult], None] = lambda result: None,
    ) -> None:
        self.store = store
        self.config = config
        self.dry_run = dry_run
        self.on_merge = on_merge
        self.flushers: dict[str, Flusher] = {}
        self.adapters: dict[str, Provider] = {}  # the running adapters (the listener uses them)
        # What the listener tells a provider's adapter (``Listener.adapter_options``).
        self.listener_options: Callable[[str], Mapping[str, Any]] = lambda name: {}
        self._scope: anyio.CancelScope | None = None
        self._reloaded = False
        # Per provider, across reloads: what a Retry-After answered before a reload still
        # holds, in the flusher and the pull loop the reload starts.
        self.health: dict[str, ProviderHealth] = {}

    def wake(self, providers: Iterable[str]) -> None:
        """Tell these providers' flushers that entries are waiting."""
        for name in providers:
            flusher = self.flushers.get(name)
            if flusher is not None:
                flusher.wake()

    def adapter(self, name: str) -> Provider | None:
        """The running adapter of provider ``name``, if it runs."""
        return self.adapters.get(name)

    def wake_all(self) -> None:
        """Another process changed the store (``dropsync resync`` among them): every flusher
        and every wait looks at it again."""
        for health in self.health.values():
            health.store_changed()
        self.wake(list(self.flushers))

    def health_of(self, config: ProviderConfig) -> ProviderHealth:
        """The provider's health (made on first use, kept across reloads)."""
        health = self.health.get(config.name)
        if health is None:
            health = self.health[config.name] = ProviderHealth(self.store, config)
        return health

    def reload(self, config: Config) -> None:
        """Restart every provider task with ``config``."""
        self.config = config
        self._reloaded = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Run provider tasks until cancelled, restarting them on reload."""
        while True:
            self._reloaded = False
            clamped = await self.store.transact(_set_up_providers, self.config, now_ms())
            for name, previous in clamped:
                log.warning(
                    "next_attempt_clamped",
                    provider=name,
                    stored=previous,
                    max_delay_s=self.config.providers[name].max_delay_s,
                )
            if self._reloaded:
                continue  # a reload came while this config was being set up: set up the new one
            for provider_config in self.config.providers.values():
                self.health_of(provider_config).restarted(provider_config)
            self._scope = anyio.CancelScope()
            with self._scope:
                async with anyio.create_task_group() as tg:
                    for provider_config in self.config.providers.values():
                        tg.start_soon(self._run_provider, provider_config)
                    await anyio.sleep_forever()
            self.flushers = {}
            self.adapters = {}

    async def _run_provider(self, config: ProviderConfig) -> None:
        health = self.health_of(config)
        try:
            provider = open_provider(config, listener_options=self.listener_options(config.name))
        except (SecretError, OptionError) as exc:
            await health.unusable(str(exc))
            return
        if isinstance(provider, NeedsLookup):
            provider.attach_lookup(self._lookup)
        if isinstance(provider, NeedsCollections):
            provider.attach_collections(collection_timestamps(self.config))
        if isinstance(provider, Laned) and not self.dry_run:
            await health.lanes.start(provider.lanes())
        async with provider, anyio.create_task_group() as tg:
            flusher = Flusher(
                self.store,
                config,
                provider,
                dry_run=self.dry_run,
                record_answer=answer_recorder(config.name, lambda: self.config),
                on_merge=self.on_merge,
                health=health,
            )
            self.adapters[config.name] = provider
            self.flushers[config.name] = flusher
            tg.start_soon(flusher.run)
            if provider.limits.can_pull and not self.dry_run:
                tg.start_soon(self._pull_loop, config, provider)
            if isinstance(provider, LiveCredentials):
                watch = CredentialWatch(config, provider, self._credentials_of(config, provider))
                if watch.sources():
                    tg.start_soon(watch.run)

    def _credentials_of(
        self, config: ProviderConfig, provider: Provider
    ) -> Callable[[CredentialUpdate], Awaitable[None]]:
        """What to do when the provider's credentials were read again."""
        health = self.health_of(config)

        async def changed(update: CredentialUpdate) -> None:
            redact_in_logs(list(update.values))  # before anything can say them
            remember_secrets(update.values)
            if not (update.changed or update.gone):
                return
            resumed = False
            if isinstance(provider, Laned) and not self.dry_run:
                resumed = await health.lanes.credentials(
                    provider.lanes(), update.changed, update.gone
                )
            log.info(
                "credentials_changed",
                provider=config.name,
                changed=len(update.changed),
                gone=len(update.gone),
                lanes=sorted(update.changed | update.gone)[:20],
            )
            if resumed:
                log.info("provider_online", provider=config.name, via="credentials")
            health.store_changed()  # a wait for auth-failed ends
            self.wake([config.name])

        return changed

    async def _lookup(
        self, collection: str, fields: Mapping[str, str]
    ) -> Sequence[tuple[str, int, JSONObject]]:
        return await self.store.call(pulled.find_records, collection, fields)

    async def pull_once(self, config: ProviderConfig, provider: Provider) -> int:
        """Pull every page available now; returns how many changes were merged."""
        total = 0
        while True:
            cursor = await self.store.call(cursors.get_cursor, config.name)
            page = await provider.pull(cursor)
            metrics.pulled(config.name, len(page.changes))
            changes = to_changes(config.name, page.changes, self.config)
            merged = await self.store.transact(
                _merge_pulled, changes, self.config.routes(), config.name, page.cursor, now_ms()
            )
            total += len(changes)
            if page.skipped:
                log.warning("pull_items_skipped", provider=config.name, items=page.skipped)
            if merged.applied:
                log.info(
                    "pulled", provider=config.name, changes=len(changes), applied=merged.applied
                )
            self.on_merge(merged)
            if not page.more:
                return total

    async def _pull_loop(self, config: ProviderConfig, provider: Provider) -> None:
        health = self.health_of(config)
        laned = provider if isinstance(provider, Laned) else None
        next_round = 0.0
        while True:
            # An auth-failed provider is tried once after a (re)start, then waits for a
            # reload or a resync (repeating refused credentials can lock the account); a
            # Retry-After holds the pull too. A resync ends either wait at once.
            await health.wait_turn(Flow.PULL)
            # Lanes whose credentials just changed are pulled at once, the others at pace.
            soon = health.lanes.take_pull_soon()
            only = soon if laned is not None and anyio.current_time() < next_round else None
            worked = True
            try:
                if laned is not None:
                    worked = await self.pull_lanes(config, laned, only) > 0
                elif isinstance(provider, StreamPuller):
                    await StreamPull(self.store, self.config, config, provider, self.on_merge).run()
                else:
                    await self.pull_once(config, provider)
            except ProviderError as exc:
                metrics.pull_failed(config.name, exc)
                # Shown like a push failure; the pull itself is tried again after
                # pull_interval_s, or after the provider's Retry-After when that is longer.
                await self._noted(config, health.pull_failed(exc))
            except sqlite3.Error as exc:
                # The store is busy (another program holds its lock) or full: what was
                # committed stays, the cursors did not move, the next tick tries again.
                log.warning("pull_store_failed", provider=config.name, error=str(exc))
            else:
                if worked:
                    await self._noted(config, health.pull_ok())
            if only is None:
                next_round = anyio.current_time() + config.pull_interval_s
            if laned is None:
                await anyio.sleep(config.pull_interval_s)
                continue
            with anyio.move_on_after(max(0.0, next_round - anyio.current_time())):
                await health.lanes.pull_wanted.wait()

    async def pull_lanes(
        self, config: ProviderConfig, provider: Laned, only: set[str] | None = None
    ) -> int:
        """Pull each lane that may be pulled (``only``: just these); returns how many were
        pulled. A lane whose credentials are refused waits alone; any other failure is the
        provider's (raised)."""
        lanes = self.health_of(config).lanes
        if not lanes.started:  # a pull loop of its own (the provider's task starts them)
            await lanes.start(provider.lanes())
        await lanes.refresh()
        pulled = 0
        for lane in provider.pull_lanes():
            if only is not None and lane not in only:
                continue
            if not lanes.may_send(lane, Flow.PULL, attempt=True):
                continue
            try:
                page = await provider.pull_lane(lane)
            except AuthError as exc:
                if await lanes.refuse(lane, exc, Flow.PULL):
                    break  # every lane is refused: the provider is auth-failed
                continue
            await self._merge_page(config, page, lane)
            await lanes.accept(lane)
            pulled += 1
        return pulled

    async def _merge_page(self, config: ProviderConfig, page: PullPage, lane: str) -> None:
        """Merge one lane's page (its cursor is not kept)."""
        changes = to_changes(config.name, page.changes, self.config)
        merged = await self.store.transact(_merge_lane, changes, self.config.routes(), now_ms())
        if page.skipped:
            log.warning("pull_items_skipped", provider=config.name, lane=lane, items=page.skipped)
        if merged.applied:
            log.info(
                "pulled",
                provider=config.name,
                lane=lane,
                changes=len(changes),
                applied=merged.applied,
            )
        self.on_merge(merged)

    @staticmethod
    async def _noted(config: ProviderConfig, noting: Awaitable[None]) -> None:
        """Show a pull's outcome in the provider's state (a busy or full store: shown at the
        next pull)."""
        try:
            await noting
        except sqlite3.Error as exc:
            log.warning("pull_store_failed", provider=config.name, error=str(exc))


def _set_up_providers(conn: sqlite3.Connection, config: Config, now: int) -> list[tuple[str, int]]:
    """One transaction at start and on reload: a state row for each configured provider,
    next attempts within the ceiling, confirm timeouts and request routes. Returns the
    (provider, next attempt) of each next attempt brought back."""
    providers = config.providers.values()
    outbox.register_providers(conn, [(p.name, p.kind) for p in providers], now=now)
    # A next attempt stored further ahead than this config allows (an older version
    # honoured any Retry-After) is brought back within the ceiling.
    clamped = outbox.clamp_next_attempts(
        conn, [(p.name, now + int(p.max_delay_s * 1000)) for p in providers]
    )
    callbacks.set_confirm_timeouts(conn, confirm_timeouts(config))
    set_routes(conn, config)
    return clamped


def _merge_lane(
    conn: sqlite3.Connection, changes: list[Change], routes: dict[str, tuple[str, ...]], now: int
) -> MergeResult:
    """One transaction: merge one lane's pulled page."""
    return apply_changes(conn, changes, routes, now=now)


def _merge_pulled(
    conn: sqlite3.Connection,
    changes: list[Change],
    routes: dict[str, tuple[str, ...]],
    provider: str,
    cursor: str | None,
    now: int,
) -> MergeResult:
    """One transaction: merge a pulled page and move the provider's cursor past it."""
    merged = apply_changes(conn, changes, routes, now=now)
    cursors.set_cursor(conn, provider, cursor, now=now)
    return merged
