"""Configuration: frozen dataclasses loaded from one TOML file (read by ``daemon.config_file``).

Where the file comes from: ``--config``, else ``$DROPSYNC_CONFIG``, else the
built-in defaults (no file needed). Relative paths resolve against
``$STATE_DIRECTORY`` when systemd sets it, else the working directory.
Every validation error names the file and the dotted key.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropsync.adapters.registry import KINDS, get_kind

from .config_file import (
    MAX_DAYS,
    Table,
    read_config_file,
    store_location,
)
from .jsontext import DEFAULT_LIMITS, JsonLimits
from .places import check_collection_name, check_places, check_provider_name

# orjson writes at most 254 levels: a deeper document could not get its canonical body.
MAX_DEPTH_CEILING = 254
MAX_DOCUMENT_MB_CEILING = 64.0

TIMESTAMP_UNITS = ("s", "ms", "us")  # a collection's timestamp_unit

# The longest any wait between two attempts may be configured to: 30 days.
MAX_DELAY_S = 30 * 86400.0
# The other ranges (docs/config.md, "Ranges of the numbers"; tests/daemon/test_config.py).
HOUR_S = 3600.0
DAY_S = 86400.0
MAX_BATCH = 1_000_000  # documents a transaction, records a request
MAX_FILE_SIZE_MB = float(1 << 20)  # 1 TB


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives: exactly one of an env var, a file, or a systemd credential."""

    env: str | None = None
    file: Path | None = None
    credential: str | None = None

    @property
    def key(self) -> str:
        """The config key that names the source: secret_env, secret_file or credential."""
        if self.env:
            return "secret_env"
        return "secret_file" if self.file else "credential"

    def describe(self) -> str:
        """A safe, value-free description of the source, for messages."""
        if self.env:
            return f"environment variable {self.env}"
        if self.file:
            return f"file {self.file}"
        return f"credential {self.credential}"


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """A drop subfolder / inbox collection and where its winning changes go."""

    name: str
    key: str | None = None  # dotted path; None: infer from the recognised shape
    timestamp: str | None = None
    providers: tuple[str, ...] = ()
    # Of a number timestamp: s, ms or us (ISO-8601 has its own). None: ms, and a number
    # before 2001-09-09 as ms is refused as looking like seconds.
    timestamp_unit: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One external provider; ``options`` holds the keys its kind adds."""

    name: str
    kind: str
    base_url: str
    secret: SecretRef | None = None
    batch_max_items: int | None = None
    timeout_s: float = 30.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    max_retry_after_s: float = 3600.0  # a provider's Retry-After is honoured up to this
    pull_interval_s: float = 60.0
    options: Mapping[str, Any] = field(default_factory=dict)
    # The kind's secrets of its own (``adapters.registry.KindSecret``), by name.
    kind_secrets: Mapping[str, SecretRef] = field(default_factory=dict)
    confirm_timeout_s: float = 24 * 3600.0

    def request_collections(self) -> tuple[str, ...]:
        """Collections whose records are requests this provider decides (routed to it
        implicitly): what its kind's ``request_collections`` hook says, if it has one."""
        hook = get_kind(self.kind).request_collections
        return () if hook is None else hook(self.options)

    @property
    def max_delay_s(self) -> float:
        """The longest this provider's next attempt can be put off (backoff or Retry-After)."""
        return max(self.backoff_cap_s, self.max_retry_after_s)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """The callback listener (``[listener]``): where it listens, what providers are told."""

    host: str = "127.0.0.1"
    port: int = 8787
    public_url: str = "http://127.0.0.1:8787"
    request_timeout_s: float = 10.0
    max_connections: int = 64


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    source: str
    store_path: Path
    drop_path: Path
    collections: Mapping[str, CollectionConfig]
    providers: Mapping[str, ProviderConfig]
    max_clock_skew_ms: int = 5 * 60 * 1000
    shutdown_grace_s: float = 10.0
    settle_ms: int = 50
    rescan_s: float = 30.0
    ingest_batch: int = 5000
    parser_process_min_bytes: int = 8 << 20
    inbox_poll_s: float = 1.0
    log_level: str = "info"
    listener: ListenerConfig | None = None  # None: no [listener] table, no listener
    json_limits: JsonLimits = DEFAULT_LIMITS  # drop.max_depth, drop.max_document_mb
    retain_days: float = 30.0  # [store]: processed inbox rows, finished deliveries (0: keep)
    keep_done_days: float = 30.0  # [drop]: files in .done/ (0: keep)

    def collection(self, name: str) -> CollectionConfig:
        """The config of ``name`` (a collection folder's name); an unconfigured collection gets
        the shape-inferring default.

        Names are compared in Unicode NFC: a folder ``café`` written as e + U+0301 (NFD, as
        macOS hands names over) is the configured ``café``, whose name its changes take; an
        unconfigured one is named in NFC.
        """
        found = self.collections.get(name)
        if found is not None:
            return found
        nfc = unicodedata.normalize("NFC", name)
        for collection in self.collections.values():
            if unicodedata.normalize("NFC", collection.name) == nfc:
                return collection
        return CollectionConfig(name=nfc)

    def routes(self) -> dict[str, tuple[str, ...]]:
        """Collection name -> providers its winning changes are sent to.

        Besides the configured routes, each provider's request collections go to it.
        """
        routes = {name: c.providers for name, c in self.collections.items() if c.providers}
        for provider in self.providers.values():
            for collection in provider.request_collections():
                if provider.name not in routes.get(collection, ()):
                    routes[collection] = (*routes.get(collection, ()), provider.name)
        return routes

    def request_collections(self) -> dict[str, str]:
        """Request collection -> the provider that decides its records."""
        return {c: p.name for p in self.providers.values() for c in p.request_collections()}


def load_config(explicit: str | None = None) -> Config:
    """Load and validate the configuration (see module docstring for where it comes from)."""
    raw, source = read_config_file(explicit)
    return parse_config(raw, source)


def _secret(
    table: Table, names: tuple[str, str, str] = ("secret_env", "secret_file", "credential")
) -> SecretRef | None:
    env = table.string(names[0])
    file = table.path(names[1])
    credential = table.string(names[2])
    given = [name for name, v in zip(names, (env, file, credential), strict=True) if v]
    if len(given) > 1:
        raise table.fail(
            given[1],
            f"give only one of {', '.join(names)} (found {', '.join(given)})",
        )
    if names[0] != "secret_env":
        return (
            SecretRef(env=env, file=Path(file) if file else None, credential=credential)
            if given
            else None
        )
    if table.get("secret") is not None or table.get("token") is not None:
        name = "secret" if "secret" in table.raw else "token"
        raise table.fail(
            name, "secrets never go in the config file: use secret_env, secret_file or credential"
        )
    if not given:
        return None
    return SecretRef(env=env, file=Path(file) if file else None, credential=credential)


def _collection(name: str, table: Table) -> CollectionConfig:
    unit = table.string("timestamp_unit")
    if unit is not None and unit not in TIMESTAMP_UNITS:
        raise table.fail(
            "timestamp_unit",
            f"expected one of {', '.join(TIMESTAMP_UNITS)} (epoch seconds, milliseconds, "
            "microseconds)",
        )
    config = CollectionConfig(
        name=name,
        key=table.string("key"),
        timestamp=table.string("timestamp"),
        providers=table.strings("providers"),
        timestamp_unit=unit,
    )
    table.reject_unknown()
    return config


def _provider(name: str, table: Table) -> ProviderConfig:
    kind = table.string("kind")
    if kind is None:
        raise table.fail("kind", f"missing; expected one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise table.fail("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    base_url = table.string("base_url")
    if base_url is None or not base_url.startswith(("http://", "https://")):
        raise table.fail("base_url", "expected an http:// or https:// URL")
    config = ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        secret=_secret(table),
        batch_max_items=table.integer("batch_max_items", None, minimum=1, maximum=MAX_BATCH),
        timeout_s=table.number("timeout_s", 30.0, minimum=0.001, maximum=MAX_DELAY_S),
        backoff_base_s=table.number("backoff_base_s", 1.0, minimum=0.001, maximum=MAX_DELAY_S),
        backoff_cap_s=table.number("backoff_cap_s", 300.0, minimum=0.001, maximum=MAX_DELAY_S),
        max_retry_after_s=table.number(
            "max_retry_after_s", 3600.0, minimum=0.0, maximum=MAX_DELAY_S
        ),
        pull_interval_s=table.number("pull_interval_s", 60.0, minimum=0.01, maximum=MAX_DELAY_S),
        kind_secrets={
            secret.name: ref
            for secret in get_kind(kind).secrets
            if (ref := _secret(table, secret.keys)) is not None
        },
        confirm_timeout_s=table.number(
            "confirm_timeout_s", 24 * 3600.0, minimum=0.001, maximum=MAX_DELAY_S
        ),
        options=table.rest(),
    )
    return config


def parse_config(raw: Mapping[str, Any], source: str) -> Config:
    """Validate a parsed TOML document; ``source`` names it in errors."""
    top = Table(source, "", dict(raw))
    store_path = Path(store_location(top))
    retain_days = top.table("store").number("retain_days", 30.0, minimum=0.0, maximum=MAX_DAYS)
    drop = top.table("drop")
    drop_path = Path(drop.path("path", "drop") or "drop")
    check_places(source, store_path, drop_path)
    settle_ms = drop.integer("settle_ms", 50, minimum=0, maximum=3_600_000)
    rescan_s = drop.number("rescan_s", 30.0, minimum=0.1, maximum=DAY_S)
    ingest_batch = drop.integer("batch", 5000, minimum=1, maximum=MAX_BATCH)
    parser_process_min_mb = drop.number(
        "parser_process_min_mb", 8.0, minimum=0.0, maximum=MAX_FILE_SIZE_MB
    )
    max_depth = drop.integer("max_depth", 64, minimum=1, maximum=MAX_DEPTH_CEILING)
    max_document_mb = drop.number(
        "max_document_mb", 1.0, minimum=0.001, maximum=MAX_DOCUMENT_MB_CEILING
    )
    keep_done_days = drop.number("keep_done_days", 30.0, minimum=0.0, maximum=MAX_DAYS)
    drop.reject_unknown()
    daemon = top.table("daemon")
    skew_s = daemon.number("max_clock_skew_s", 300.0, minimum=0.0, maximum=MAX_DELAY_S)
    # 0 would make every stop overdue (exit 1) before the work under way could end.
    grace_s = daemon.number("shutdown_grace_s", 10.0, minimum=0.1, maximum=HOUR_S)
    inbox_poll_s = daemon.number("inbox_poll_s", 1.0, minimum=0.01, maximum=HOUR_S)
    log_level = daemon.string("log_level", "info") or "info"
    if log_level not in ("debug", "info", "warning", "error"):
        raise daemon.fail("log_level", "expected one of debug, info, warning, error")
    daemon.reject_unknown()

    listener = _listener(top)
    providers_table = top.table("providers")
    providers = {}
    for name in providers_table.raw:
        check_provider_name(source, name)
        providers[name] = _provider(name, providers_table.table(name))
    collections_table = top.table("collections")
    collections: dict[str, CollectionConfig] = {}
    for name in collections_table.raw:
        check_collection_name(source, name)
        sub = collections_table.table(name)
        collection = _collection(name, sub)
        for provider in collection.providers:
            if provider not in providers:
                raise sub.fail(
                    "providers",
                    f"names provider {provider!r}, which is not defined under [providers]",
                )
        nfc = unicodedata.normalize("NFC", name)
        twin = next((c for c in collections if unicodedata.normalize("NFC", c) == nfc), None)
        if twin is not None:
            raise collections_table.fail(
                name,
                f"the same name as {twin!r} in another Unicode form (NFC, NFD): a folder of "
                "either spelling would be both collections; keep one",
            )
        collections[name] = collection
    for configured in providers.values() if listener is not None else ():
        for secret in get_kind(configured.kind).secrets:
            if secret.listener_needs and secret.name not in configured.kind_secrets:
                raise providers_table.table(configured.name).fail(
                    secret.keys[0], secret.listener_needs
                )
    top.reject_unknown()
    return Config(
        source=source,
        store_path=store_path,
        drop_path=drop_path,
        collections=collections,
        providers=providers,
        max_clock_skew_ms=int(skew_s * 1000),
        shutdown_grace_s=grace_s,
        settle_ms=settle_ms,
        rescan_s=rescan_s,
        ingest_batch=ingest_batch,
        parser_process_min_bytes=int(parser_process_min_mb * (1 << 20)),
        inbox_poll_s=inbox_poll_s,
        log_level=log_level,
        listener=listener,
        json_limits=JsonLimits(max_depth, int(max_document_mb * (1 << 20))),
        retain_days=retain_days,
        keep_done_days=keep_done_days,
    )


def _listener(top: Table) -> ListenerConfig | None:
    """The ``[listener]`` table, or None when the file has none."""
    if top.raw.get("listener") is None:
        top.used.add("listener")
        return None
    table = top.table("listener")
    host = table.string("host", "127.0.0.1") or "127.0.0.1"
    # Not 0 ("any free port"): the address is told to providers, so it must be known.
    port = table.integer("port", 8787, minimum=1, maximum=65535)
    public_url = table.string("public_url")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise table.fail("public_url", "expected an http:// or https:// URL")
    config = ListenerConfig(
        host=host,
        port=port,
        public_url=(public_url or f"http://{host}:{port}").rstrip("/"),
        request_timeout_s=table.number("request_timeout_s", 10.0, minimum=0.1, maximum=HOUR_S),
        max_connections=table.integer("max_connections", 64, minimum=1, maximum=10_000),
    )
    table.reject_unknown()
    return config
