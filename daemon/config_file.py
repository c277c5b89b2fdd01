"""Reading the config file: where it is, its TOML, typed access with file-and-key errors.

The part of configuration that needs no dataclasses, so that ``dropsync status``
can find the store without loading the whole daemon configuration (see
``daemon.config`` for the full, validated ``Config``). It is on status's fast path too:
paths are text here (``os.path``, not pathlib: see ``plain``), and the file is read by
``simple_toml`` (a strict subset of TOML) whenever it can, by tomllib otherwise.
"""

from __future__ import annotations

import math
import os

TYPE_CHECKING = False  # typing's, without importing typing (status starts fast)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, overload

    from .errors import ConfigError

BUILTIN = "<built-in defaults>"
DEFAULT_STORE = "dropsync.db"


def config_error(source: str, key: str, problem: str) -> ConfigError:
    """The ``ConfigError`` naming ``source`` and ``key``; the errors module is imported only
    when there is one (``status``'s way imports no error class)."""
    from .errors import ConfigError

    return ConfigError(source, key, problem)


def plain(path: str) -> str:
    """``str(pathlib.Path(path))`` without importing pathlib: empty and ``.`` parts and a
    trailing ``/`` dropped, ``..`` kept (unlike ``os.path.normpath``), ``//`` kept at the
    start (POSIX)."""
    parts = path.lstrip("/")
    slashes = len(path) - len(parts)
    root = "//" if slashes == 2 else "/" if slashes else ""
    return root + "/".join(p for p in parts.split("/") if p and p != ".") or "."


def base_directory() -> str:
    """Where relative paths point: ``$STATE_DIRECTORY`` under systemd, else the cwd."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        # systemd may pass several colon-separated directories; the first is ours.
        return plain(state.split(":")[0])
    return plain(os.getcwd())


def config_location(explicit: str | None) -> str | None:
    """The config file to read, or None for the built-in defaults."""
    if explicit:
        return plain(explicit)
    env = os.environ.get("DROPSYNC_CONFIG")
    return plain(env) if env else None


def read_config_file(explicit: str | None = None) -> tuple[dict[str, Any], str]:
    """The parsed TOML of the config file and its name; ``({}, BUILTIN)`` for the defaults."""
    path = config_location(explicit)
    if path is None:
        return {}, BUILTIN
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise config_error(path, "", "file not found") from None
    except OSError as exc:
        raise config_error(path, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise config_error(path, "", "not UTF-8 text") from None
    raw = simple_toml(text)
    if raw is None:
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise config_error(path, "", f"invalid TOML: {exc}") from None
        except ValueError as exc:  # an integer longer than int() converts (4300 digits)
            raise config_error(path, "", f"invalid TOML: {exc}") from None
    return raw, path


# --- status's fast path: a strict subset of TOML, read without tomllib ---------------------
# Importing tomllib (with typing, datetime and string) cost ``dropsync status`` more than all
# of its own modules. ``simple_toml`` reads the plain files people write and returns None
# for anything else, tomllib's to read: every file gets tomllib's answer, its errors
# included. tests/daemon/test_config_file.py holds the two to that (a property test). No
# regular expressions: compiling them would cost as much as the import saved.

_BARE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_WORD = _BARE + "+."  # what a value that is not a string is made of, in this subset
# TOML allows none of these anywhere (in strings, comments, between tokens); \r only before \n.
_CONTROL = [chr(code) for code in (*range(9), *range(11, 32), 127)]


def simple_toml(text: str) -> dict[str, Any] | None:
    """``tomllib.loads(text)`` if ``text`` keeps to a plain subset of TOML, else None.

    The subset, one statement a line: blank lines and comments; table headers of bare
    keys (``[providers.NAME]``); ``key = value`` with a bare key and a value that is a
    string without escapes (basic or literal), an integer or a decimal number (no
    exponent, inf, nan, hex, octal or binary), a boolean, or a one-line array of those.
    None for any other line (multi-line strings and arrays, inline tables, dotted and
    quoted keys, dates, arrays of tables), for a key or table defined twice or over
    another, and for a control character anywhere: tomllib reads those, and reports the
    errors.
    """
    text = text.replace("\r\n", "\n")
    if any(char in text for char in _CONTROL):
        return None
    root: dict[str, Any] = {}
    table = root
    for raw in text.split("\n"):
        line = raw.strip(" \t")  # TOML's whitespace (str.strip's is more)
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            close = line.find("]")
            names = [name.strip(" \t") for name in line[1:close].split(".")]
            if close < 0 or not all(map(_bare, names)) or not _ends(line[close + 1 :]):
                return None
            table = root
            for name in names[:-1]:
                table = table.setdefault(name, {})
                if not isinstance(table, dict):
                    return None
            if names[-1] in table:  # defined before, or implicitly by a sub-table's header
                return None
            new: dict[str, Any] = {}
            table[names[-1]] = new
            table = new
            continue
        key, equals, rest = line.partition("=")
        key = key.rstrip(" \t")
        read = _value(rest.lstrip(" \t")) if equals and _bare(key) else None
        if read is None or key in table or not _ends(read[1]):
            return None
        table[key] = read[0]
    return root


def _bare(key: str) -> bool:
    return bool(key) and not key.strip(_BARE)


def _ends(rest: str) -> bool:
    """Nothing more on the line but whitespace and a comment."""
    rest = rest.lstrip(" \t")
    return not rest or rest[0] == "#"


def _value(text: str) -> tuple[object, str] | None:
    """The value at the start of ``text`` and the text after it; None if not in the subset."""
    if text[:1] != "[":
        return _scalar(text)
    items = []
    rest = text[1:].lstrip(" \t")
    while rest[:1] != "]":
        read = _scalar(rest)
        if read is None:
            return None
        items.append(read[0])
        rest = read[1].lstrip(" \t")
        if rest[:1] == ",":
            rest = rest[1:].lstrip(" \t")
        elif rest[:1] != "]":
            return None
    return items, rest[1:]


def _scalar(text: str) -> tuple[object, str] | None:
    quote = text[:1]
    if quote in ('"', "'"):
        end = text.find(quote, 1)
        if end < 0 or (quote == '"' and "\\" in text[1:end]):  # no escapes
            return None
        return text[1:end], text[end + 1 :]
    word = text[: len(text) - len(text.lstrip(_WORD))]
    rest = text[len(word) :]
    if word in ("true", "false"):
        return word == "true", rest
    whole, dot, fraction = (word[1:] if word[:1] in ("+", "-") else word).partition(".")
    if not _digits(whole) or (whole[0] == "0" and len(whole) > 1):
        return None  # no leading zero
    if dot and not _digits(fraction):
        return None
    try:
        return (float(word) if dot else int(word)), rest
    except ValueError:  # more digits than int() converts
        return None


def _digits(text: str) -> bool:
    """Decimal digits, an underscore only between two."""
    return (
        bool(text)
        and not text.strip("0123456789_")
        and text[0] != "_"
        and text[-1] != "_"
        and "__" not in text
    )


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
            raise config_error(source, prefix, "expected a table")
        self.source = source
        self.prefix = prefix
        self.raw: dict[str, Any] = raw
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return config_error(self.source, self.key(name), problem)

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

    if TYPE_CHECKING:  # typing.overload is not imported when the program runs

        @overload
        def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int: ...
        @overload
        def integer(
            self, name: str, default: None, *, minimum: int, maximum: int
        ) -> int | None: ...

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

    def path(self, name: str, default: str | None = None) -> str | None:
        """A non-empty string read as a path (``resolved``); None if absent and no default."""
        value = self.string(name, default)
        if value is None:
            return None
        try:
            return resolved(value)
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

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


def resolved(value: str) -> str:
    """A path from the config: ``~`` expanded, relative ones under ``base_directory()``.

    ``str(resolve_path(value))``, made without pathlib (status's fast path). Raises
    ValueError for ``~user`` of no known user (``Table.path`` names the key).
    """
    path = _expanded(value)
    return path if path.startswith("/") else plain(os.path.join(base_directory(), path))


def _expanded(value: str) -> str:
    """``str(Path(value).expanduser())``."""
    path = plain(value)
    if not path.startswith("~"):
        return path
    first, _, rest = path.partition("/")
    home = os.path.expanduser(first)
    if home.startswith("~"):  # pathlib raises RuntimeError: a config error, said as one
        raise ValueError(f"{first!r}: no such user, so no home directory to put the path in")
    return plain(os.path.join(home, rest))


def resolve_path(value: str) -> Path:
    """A path from the config: ``~`` expanded, relative ones under ``base_directory()``."""
    from pathlib import Path

    return Path(resolved(value))


def store_location(top: Table) -> str:
    """The ``[store]`` table: where the store file is (the table is checked whole)."""
    store = top.table("store")
    store_path = store.path("path", DEFAULT_STORE) or resolved(DEFAULT_STORE)
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
        from .errors import ConfigError

        try:
            raw, _ = read_config_file(explicit)
        except ConfigError:
            raw = {}
        table = raw.get("store")
        named = table.get("path") if isinstance(table, dict) else None
        value = named if isinstance(named, str) and named else DEFAULT_STORE
        key = "[store] path" if value is named else "the default [store] path"
        given = f"{key} {value!r} in {path} (from {how})"
    try:
        absolute = _expanded(value).startswith("/")
    except ValueError:  # ~user of no known user: the value as given says it all
        absolute = True
    if absolute:
        return given
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return f"{given}, relative to $STATE_DIRECTORY ({base_directory()})"
    return f"{given}, relative to the working directory ({plain(os.getcwd())})"


def store_path_of(explicit: str | None = None) -> str:
    """Where the store is (its path as text), reading only ``[store]`` of the config file.

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
    from pathlib import Path

    return Path(drop.path("path", "drop") or "drop")
