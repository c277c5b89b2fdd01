"""``dropsync demo``: the daemon on built-in emulated providers and sample files."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import refuse_config

HELP = "run the daemon on built-in emulated providers and sample files"
LOG_STREAM = "stdout"  # the daemon's log lines, and the error that ends it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dir``, ``--exit-when-synced``."""
    parser.add_argument(
        "--dir",
        metavar="DIR",
        default="dropsync-demo",
        help="where the demo's store and drop folder go (default: ./dropsync-demo)",
    )
    parser.add_argument(
        "--exit-when-synced",
        action="store_true",
        help="exit once every provider has everything (for scripts and CI): 0, or 1 when a "
        "record was dead-lettered or a document rejected",
    )


def run(args: argparse.Namespace) -> int:
    """Start the emulators and run the daemon against them."""
    refuse_config(args, "demo", "it makes its own, with its store and drop folder under --dir")
    from ..demo import run_demo

    return run_demo(Path(args.dir), exit_when_synced=args.exit_when_synced)
