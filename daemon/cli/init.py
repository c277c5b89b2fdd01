"""``dropsync init [DIR]``: a commented example config (every key, its default), a drop folder."""

from __future__ import annotations

import argparse

from .common import EXIT_OK

HELP = "write a commented example config (every key with its default) and the drop folder"

CONFIG_NAME = "dropsync.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR``, ``--force``."""
    parser.add_argument(
        "dir", nargs="?", default=".", metavar="DIR", help="where to write them (default: .)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"replace an existing {CONFIG_NAME} in DIR (a regular file)",
    )


def example_config() -> str:
    """The example config shipped with dropsync (docs/config.md shows the same text)."""
    from importlib.resources import files

    return files("dropsync.daemon").joinpath("config_example.toml").read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Write ``DIR/dropsync.toml`` and ``DIR/drop/``; refuse to overwrite a config."""
    import os
    import tempfile
    from pathlib import Path

    from ..errors import UsageError
    from ..ingest.dropfiles import kind_of, new_file_mode
    from .common import refuse_config

    refuse_config(args, "init", "it writes one, DIR/dropsync.toml")
    folder = Path(args.dir)
    config = folder / CONFIG_NAME
    try:
        mode: int | None = os.lstat(config).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not args.force:
            raise UsageError(f"{config} exists: edit it, or give --force to replace it")
        kind = kind_of(config, mode)
        if kind is not None:
            raise UsageError(f"{config} is {kind}: --force replaces only a regular file")
    folder.mkdir(parents=True, exist_ok=True)
    # Written beside it, then renamed over it: a link put there meanwhile is replaced, never
    # followed, and no one ever reads half a config.
    handle, temporary = tempfile.mkstemp(prefix=f".{CONFIG_NAME}.", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(example_config())
    os.chmod(temporary, new_file_mode())  # as a new file would be
    os.replace(temporary, config)
    (folder / "drop").mkdir(exist_ok=True)
    print(f"wrote {config} and {folder / 'drop'}/")
    print(f"next: edit it, then: dropsync check-config --config {config}")
    print(f"      dropsync run --config {config}")
    return EXIT_OK
