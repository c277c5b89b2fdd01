"""Reading the config file: where it is, its TOML, typed access with file-and-key errors.

The part of configuration that needs no dataclasses, so that ``dropsync status``
can find the store without loading the whole daemon configuration (see
``daemon.config`` for the full, validated ``Config``).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, overload

from .errors import ConfigError

BUILTIN = "<built-in defaults>"
DEFAULT_STORE = "dropsync.db"


def base_directory() -> Path:
    """Where relative paths point: ``$STATE_DIRECTORY`` under systemd, else the cwd."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(state.split(":")[0])
    return Path.cwd()


def config_location(explicit: str | None) -> Path | None:
    """The config file to read, or None for the built-in defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("DROPSYNC_CONFIG")
    return Path(env) if env else None


def read_config_file(explicit: str | None = None) -> tuple[dict[str, Any], str]:
    """The parsed TOML of the config file and its name; ``({}, BUILTIN)`` for the defaults."""
    path = config_location(explicit)
    if path is None:
        return {}, BUILTIN
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None
    return raw, str(path)


# [store] retain_days and [drop] keep_done_days: 100 years at most (0 keeps everything).
MAX_DAYS = 36500.0


def shown(number: float) -> str:
    """A range's end as a person reads it: ``2,592,000``, ``0.001``."""
    if isinstance(number, int) or number == int(number):
        return f"{int(number):,}"
    return f"{number:g}"


class Table:
    """Typed access to one TOML table that reports errors with file and dotted key."""

    def __init__(self, source: str, prefix: str, raw: object) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(source, prefix, "expected a table")
        self.source = source
        self.prefix = prefix
        self.raw: dict[str, Any] = raw
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def get(self, name: str) -> Any:
        self.used.add(name)
        return self.raw.get(name)

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(name, "expected a non-empty string")
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """A finite number within ``minimum .. maximum`` (docs/config.md, "Ranges")."""
        value = self.get(name)
        if value is None:
            return default
        # TOML has inf and nan; neither is a duration or a size.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not minimum <= value <= maximum
        ):
            raise self.fail(name, f"expected a number from {shown(minimum)} to {shown(maximum)}")
        return float(value)

    @overload
    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int: ...
    @overload
    def integer(self, name: str, default: None, *, minimum: int, maximum: int) -> int | None: ...
    def integer(self, name: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
        """A whole number within ``minimum .. maximum`` (docs/config.md, "Ranges")."""
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(
                name, f"expected a whole number from {shown(minimum)} to {shown(maximum)}"
            )
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(name, "expected a list of non-empty strings")
        return tuple(value)

    def table(self, name: str) -> Table:
        value = self.get(name)
        return Table(self.source, self.key(name), {} if value is None else value)

    def rest(self) -> dict[str, Any]:
        """Keys not read yet (a kind's own options)."""
        return {k: v for k, v in self.raw.items() if k not in self.used}

    def reject_unknown(self) -> None:
        for name in self.raw:
            if name not in self.used:
                raise self.fail(name, "unknown key")


def resolve_path(value: str) -> Path:
    """A path from the config: ``~`` expanded, relative ones under ``base_directory()``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_directory() / path


def store_location(top: Table) -> Path:
    """The ``[store]`` table: where the store file is (the table is checked whole)."""
    store = top.table("store")
    store_path = resolve_path(store.string("path", DEFAULT_STORE) or DEFAULT_STORE)
    # Checked here too: status reads [store] alone.
    store.number("retain_days", 30.0, minimum=0.0, maximum=MAX_DAYS)
    store.reject_unknown()
    return store_path


def store_origin(explicit: str | None = None) -> str:
    """Where the store path came from, in words (for messages about a store that is missing).

    Names the config file and how it was chosen (``--config`` or ``$DROPSYNC_CONFIG``), or
    the built-in default, and what a relative path was resolved against
    (``$STATE_DIRECTORY`` or the working directory).
    """
    path = config_location(explicit)
    if path is None:
        given = f"the built-in default {DEFAULT_STORE} (no --config, $DROPSYNC_CONFIG not set)"
        value = DEFAULT_STORE
    else:
        how = "--config" if explicit else "$DROPSYNC_CONFIG"
        try:
            raw, _ = read_config_file(explicit)
        except ConfigError:
            raw = {}
        table = raw.get("store")
        named = table.get("path") if isinstance(table, dict) else None
        value = named if isinstance(named, str) and named else DEFAULT_STORE
        key = "[store] path" if value is named else "the default [store] path"
        given = f"{key} {value!r} in {path} (from {how})"
    if Path(value).expanduser().is_absolute():
        return given
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return f"{given}, relative to $STATE_DIRECTORY ({base_directory()})"
    return f"{given}, relative to the working directory ({Path.cwd()})"


def store_path_of(explicit: str | None = None) -> Path:
    """Where the store is, reading only ``[store]`` of the config file.

    For the read-only commands: a mistake elsewhere in the file (a provider being
    edited, say) does not stop an operator from seeing what is pending.
    """
    raw, source = read_config_file(explicit)
    return store_location(Table(source, "", raw))


def drop_path_of(explicit: str | None = None) -> Path:
    """Where the drop folder is, reading only ``[drop] path`` of the config file.

    For ``dropsync backup``, which must know the drop folder (never a backup's place)
    without holding the rest of the file to the daemon's standard.
    """
    raw, source = read_config_file(explicit)
    drop = Table(source, "", raw).table("drop")
    return resolve_path(drop.string("path", "drop") or "drop")
