"""``dropsync run``: the daemon in the foreground (what systemd starts)."""

from __future__ import annotations

import argparse

from .common import checked_config

HELP = "run the daemon in the foreground (what systemd starts)"
LOG_STREAM = "stdout"  # the daemon's log lines, and the error that ends it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dry-run``."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="ingest as usual but only show the batches it would send to providers",
    )


def run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; its exit code.

    Signal handling comes first (``daemon.process.early_signals``): a SIGHUP while starting never
    ends the process, a SIGTERM then stops it (exit 0).
    """
    from ..process import early_signals

    early_signals.install()
    try:
        import anyio

        from ..process.logs import configure_logging
        from ..process.runner import Daemon
        from ..process.secrets import check_secrets

        config = checked_config(args)
        early_signals.config_read()
        check_secrets(config)  # an unreadable secret: exit 2 (systemd: RestartPreventExitStatus=2)
        configure_logging(config.log_level)
        daemon = Daemon(config, config_arg=args.config, dry_run=args.dry_run)
        return anyio.run(daemon.run)
    except early_signals.StopBeforeStart:
        return 0  # stopped before it started: nothing to finish
