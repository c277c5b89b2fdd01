"""Where the daemon's own files are, and the names from the config that become paths.

A provider's name names its spool folder (``<spool>/<provider>/``, removed and made
again at each start) and a collection's name is a folder of the drop folder: each is
checked before it is used (``check_provider_name``, ``check_collection_name``). The
store, its companion files and its spool folder are never inside the drop folder, where
anything found is taken for a dropped file and moved away (``check_places``); nor are the
files and folders providers read (``check_outside_drop``: secret files, a kind's folders).

Only the standard library here: ``dropsync backup`` reads this to know what it may
never replace.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

from .errors import ConfigError

NAME_MAX = 255  # bytes of one file name on Linux (ext4, xfs, btrfs, tmpfs)
MAX_STORE_NAME = 200  # bytes: room for the longest name beside it (<name>.before-vN-<time>.bak)
PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PROVIDER_NAME_RULE = (
    "1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or a digit "
    "(a provider's name names its spool folder)"
)
COLLECTION_NAME_RULE = (
    "a collection name is a plain folder name of the drop folder: not empty, not starting "
    f'with ".", no "/" and no control character, at most {NAME_MAX} bytes of UTF-8'
)


# The spool's scratch database, beside the providers' folders: hidden, a name no provider has.
SCRATCH_DATABASE = ".spool.db"


def spool_folder(store_path: Path) -> Path:
    """Where file batches are written: next to the store."""
    return store_path.parent / f".{store_path.name}.spool"


def companions(store_path: Path) -> list[tuple[str, Path]]:
    """The store and every file and folder kept beside it, by what each is.

    A store that is a link has SQLite's files (``-wal``, ``-shm``, ``-journal``) beside
    the file it names, the daemon's beside the link: both are listed.
    """
    found = []
    for store in dict.fromkeys((store_path, real(store_path))):
        found += [
            ("the store", store),
            ("the store's write-ahead log", store.with_name(store.name + "-wal")),
            ("the store's shared-memory index", store.with_name(store.name + "-shm")),
            ("the store's rollback journal", store.with_name(store.name + "-journal")),
            ("the daemon's instance lock", store.with_name(store.name + ".lock")),
            ("the daemon's runtime file", store.with_name(store.name + ".runtime.json")),
            ("the store's spool folder", spool_folder(store)),
        ]
    return found


def real(path: Path) -> Path:
    """``path`` with every link on the way resolved (the parts that exist)."""
    return Path(os.path.realpath(path))


def is_within(path: Path, folder: Path) -> bool:
    """True if ``path`` is ``folder`` or inside it (both taken as they are: resolve first)."""
    return path == folder or folder in path.parents


def check_provider_name(source: str, name: str) -> None:
    """ConfigError naming ``providers.NAME`` unless ``name`` is in the safe set."""
    if not PROVIDER_NAME.fullmatch(name):
        raise ConfigError(source, f"providers.{toml_key(name)}", PROVIDER_NAME_RULE)


def collection_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a collection folder's name, or None if it can."""
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or any(unicodedata.category(char) == "Cc" for char in name)
        or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX
    ):
        return COLLECTION_NAME_RULE
    return None


def check_collection_name(source: str, name: str) -> None:
    """ConfigError naming ``collections.NAME`` unless ``name`` is a plain folder name."""
    problem = collection_name_problem(name)
    if problem is not None:
        raise ConfigError(source, f"collections.{toml_key(name)}", problem)


def check_places(source: str, store_path: Path, drop_path: Path) -> None:
    """ConfigError unless the store's files and the drop folder are apart (and the store's
    file name leaves room for the names made from it: ``store.path``).

    ``store.path``: the store or a companion inside the drop folder (at any depth: every
    folder there is a collection folder, and ``.processing/``, ``.done/``, ``.quarantine/``
    are the daemon's). ``drop.path``: the drop folder inside (or the same as) a companion.
    Links are resolved, so a link to the drop folder does not hide it.
    """
    if len(store_path.name.encode("utf-8", "surrogateescape")) > MAX_STORE_NAME:
        raise ConfigError(
            source,
            "store.path",
            f"the store's file name is longer than {MAX_STORE_NAME} bytes: the files kept "
            "beside it add to it (.runtime.json, the backup before a migration "
            f"<name>.before-vN-<time>.bak) and each must fit in {NAME_MAX}",
        )
    drop = real(drop_path)
    for what, path in companions(store_path):
        place = real(path)
        if is_within(place, drop):
            raise ConfigError(
                source,
                "store.path",
                f"{what} would be {path}, inside the drop folder {drop_path}"
                + ("" if place == path else f" (as {place})")
                + ", where the daemon takes every file for a dropped one: put the store "
                "outside the drop folder",
            )
        if is_within(drop, place):
            raise ConfigError(
                source,
                "drop.path",
                f"the drop folder {drop_path} would be inside {what} ({path}): put the drop "
                "folder beside the store, not in its files",
            )


def check_outside_drop(source: str, key: str, what: str, path: Path, drop_path: Path) -> None:
    """ConfigError naming ``key`` if ``path`` (a file or folder a provider reads: a secret
    file, a kind's folder of credentials) is in the drop folder, at any depth.

    The daemon takes every entry there for a dropped file and moves it away: a secret kept
    there went to ``.quarantine/``, and its provider lost it at the next reload or start.
    The entry itself counts (a link there is moved as well) and so does where it leads.
    """
    drop = real(drop_path)
    for place in (real(path.parent) / path.name, real(path)):
        if is_within(place, drop):
            raise ConfigError(
                source,
                key,
                f"{what} {path} is inside the drop folder {drop_path}"
                + ("" if place == path else f" (as {place})")
                + ", where the daemon takes every file for a dropped one and moves it away: "
                "keep it outside the drop folder",
            )


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """``name`` as a TOML key: bare if it can be, else quoted (``"billing/eu"``, escaped ASCII)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)
