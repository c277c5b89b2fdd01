"""``dropsync check-config``: the config, its providers' options and their secrets."""

from __future__ import annotations

import argparse

from .common import EXIT_OK, checked_config, log_to_stderr

HELP = "validate the config file, each provider's options and every secret (readable, usable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments of its own (``--config`` is global)."""


def run(args: argparse.Namespace) -> int:
    """Check everything the daemon would check at start; print a one-line summary."""
    from ..process.secrets import check_secrets

    log_to_stderr()
    config = checked_config(args)
    check_secrets(config)  # the same check as a reload's (SIGHUP)
    print(
        f"ok: {config.source}: store {config.store_path}, drop folder {config.drop_path}, "
        f"{len(config.collections)} collection(s), {len(config.providers)} provider(s)"
    )
    return EXIT_OK
