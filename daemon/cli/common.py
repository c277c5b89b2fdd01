"""What the command modules share: exit codes, the checked config, output helpers.

Imports here are cheap (the standard library's lightest only at module level: no pathlib,
no typing): ``status`` loads this module.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing (status starts fast)
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# ``status --check``'s thresholds unless given (``health_check.Thresholds``, docs/cli.md):
# here, so that a plain ``status`` has its defaults without importing the check.
PENDING_WARN_S, PENDING_CRIT_S, DISK_WARN_PCT, DISK_CRIT_PCT = 900.0, 3600.0, 10.0, 5.0


def checked_config(args: argparse.Namespace) -> Config:
    """The whole config named by ``--config`` (or its defaults), providers' options checked."""
    from ..config import load_config
    from ..delivery.providers import check_provider_options

    config = load_config(args.config)
    check_provider_options(config)
    return config


def config_of(args: argparse.Namespace) -> Config:
    """The whole config named by ``--config`` (or its defaults)."""
    from ..config import load_config

    return load_config(args.config)


def existing_store(explicit: str | None, store_path: str) -> str:
    """``store_path`` if the store exists; else StoreMissing naming where the path came from.

    Only ``dropsync run`` creates a store: any other command that found none was most
    likely pointed at the wrong place (no ``--config``, another working directory).
    """
    if os.path.exists(store_path):
        return store_path
    from pathlib import Path

    from ..config_file import store_origin
    from ..errors import StoreMissing

    path = Path(store_path)
    if path.exists():  # raises what os.path hides (a folder this process may not look into)
        return store_path
    folder = "" if path.parent.is_dir() else f", nor does its folder {path.parent}"
    raise StoreMissing(
        f"store {store_path} does not exist{folder}; that path is {store_origin(explicit)}. Only "
        "'dropsync run' creates a store: run the daemon once, or give the --config whose "
        "[store] path names your store"
    )


def store_of(args: argparse.Namespace) -> Config:
    """The whole config, after checking that its store exists (see ``existing_store``)."""
    config = config_of(args)
    existing_store(args.config, str(config.store_path))
    return config


def refuse_config(args: argparse.Namespace, command: str, instead: str) -> None:
    """A command that reads no config file refuses ``--config`` rather than ignore it."""
    if args.config:
        from ..errors import UsageError

        raise UsageError(
            f"{command} reads no config file (given --config {args.config}): {instead}"
        )


def log_to_stderr() -> None:
    """Log lines of a one-shot command go to stderr: its stdout is its result."""
    from ..process.logs import configure_logging

    configure_logging("info", sys.stderr)


def dump_json(value: Any) -> str:
    """``value`` as indented JSON (anything unknown as its ``str``)."""
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
