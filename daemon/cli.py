"""The ``dropsync`` command line.

Exit codes: 0 ok, 2 usage or config error (the message names the file and
key), 1 any other failure.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from dropsync.daemon.errors import ConfigError, DropsyncError, SecretError, UsageError
from dropsync.store.errors import StoreError

# Subcommands import what they need when they run: `status` must start fast.
if TYPE_CHECKING:
    from dropsync.daemon.config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"dropsync: error: {message}\n")


COMMANDS = (
    "run",
    "demo",
    "status",
    "ingest",
    "check-config",
    "emulate",
    "why",
    "resync",
    "dead-letters",
)


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if known."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, or of ``only`` alone.

    Building all of them takes longer than ``status`` takes to answer, so ``main``
    builds just the one being run (help and usage errors name every command when
    no known command was given).
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config (default: $DROPSYNC_CONFIG, else built-in defaults)",
    )
    parser = _Parser(prog="dropsync", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("run"):
        run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
        run.add_argument(
            "--dry-run",
            action="store_true",
            help="ingest as usual but only show what would be sent to providers",
        )
    if wanted("demo"):
        demo = sub.add_parser(
            "demo",
            parents=[common],
            help="run the daemon on built-in emulated providers and sample files",
        )
        demo.add_argument(
            "--dir",
            default="dropsync-demo",
            help="where the demo store and drop folder go (default: ./dropsync-demo)",
        )
        demo.add_argument(
            "--exit-when-synced",
            action="store_true",
            help="exit 0 once every provider's outbox is empty",
        )
    if wanted("status"):
        status = sub.add_parser("status", parents=[common], help="what is pending and why")
        status.add_argument("--json", action="store_true")
    if wanted("ingest"):
        ingest = sub.add_parser("ingest", parents=[common], help="ingest files once")
        ingest.add_argument("files", nargs="+", metavar="FILE")
        ingest.add_argument(
            "--collection",
            help="collection for files outside the drop folder (default: the file's folder name)",
        )
    if wanted("check-config"):
        sub.add_parser("check-config", parents=[common], help="validate the config and secrets")
    if wanted("emulate"):
        emulate = sub.add_parser("emulate", parents=[common], help="run the provider emulators")
        emulate.add_argument("--host", default="127.0.0.1")
        emulate.add_argument("--crm-port", type=int, default=8081)
        emulate.add_argument("--favourites-port", type=int, default=8082)
        emulate.add_argument("--registrations-port", type=int, default=8083)
    if wanted("why"):
        why = sub.add_parser("why", parents=[common], help="LWW audit of one key")
        why.add_argument("collection")
        why.add_argument("key")
        why.add_argument("--json", action="store_true")
    if wanted("resync"):
        resync = sub.add_parser(
            "resync",
            parents=[common],
            help="queue every record for a provider again and clear its pause",
        )
        resync.add_argument("provider")
        resync.add_argument("--dry-run", action="store_true")
        resync.add_argument(
            "--unconfirmed",
            action="store_true",
            help="send again only the records of batches accepted but not confirmed within "
            "the provider's confirm_timeout_s",
        )
    if wanted("dead-letters"):
        dead = sub.add_parser("dead-letters", parents=[common], help="list, retry or drop")
        dead.add_argument("action", choices=["list", "retry", "drop"])
        dead.add_argument("--provider")
        dead.add_argument("--id", type=int, action="append", default=[], dest="ids")
        dead.add_argument("--all", action="store_true", help="retry/drop every dead letter")
        dead.add_argument("--json", action="store_true")
    return parser


def _config(args: argparse.Namespace) -> Config:
    from dropsync.daemon.config import load_config
    from dropsync.daemon.providers import check_provider_options

    config = load_config(args.config)
    check_provider_options(config)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    """``dropsync run``."""
    import anyio
    from dropsync.daemon.logs import configure_logging
    from dropsync.daemon.runner import Daemon

    config = _config(args)
    configure_logging(config.log_level)
    daemon = Daemon(config, config_arg=args.config, dry_run=args.dry_run)
    return anyio.run(daemon.run)


def cmd_demo(args: argparse.Namespace) -> int:
    """``dropsync demo``."""
    from dropsync.daemon.demo import run_demo

    return run_demo(Path(args.dir), exit_when_synced=args.exit_when_synced)


def cmd_emulate(args: argparse.Namespace) -> int:
    """``dropsync emulate``."""
    from dropsync.daemon.demo import run_emulators

    return run_emulators(
        args.host,
        crm_port=args.crm_port,
        favourites_port=args.favourites_port,
        registrations_port=args.registrations_port,
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    """``dropsync check-config``: the config, its providers' options and their secrets."""
    from dropsync.daemon.secrets import read_secret

    config = _config(args)
    for provider in config.providers.values():
        if provider.secret is not None:
            try:
                read_secret(provider.secret, provider.name)
            except SecretError as exc:
                raise ConfigError(config.source, f"providers.{provider.name}", str(exc)) from None
    print(
        f"ok: {config.source}: store {config.store_path}, drop folder {config.drop_path}, "
        f"{len(config.collections)} collection(s), {len(config.providers)} provider(s)"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropsync`` console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_in(words)).parse_args(words)
    if args.command not in ("run", "demo", "emulate", "status"):
        from dropsync.daemon.logs import configure_logging

        # One-shot commands print their results on stdout; log lines go to stderr.
        configure_logging("info", sys.stderr)
    if args.command == "status":
        from dropsync.daemon.status import cmd_status

        return _run(cmd_status, args)
    from dropsync.daemon import commands

    handlers = {
        "run": cmd_run,
        "demo": cmd_demo,
        "emulate": cmd_emulate,
        "check-config": cmd_check_config,
        "ingest": commands.cmd_ingest,
        "why": commands.cmd_why,
        "resync": commands.cmd_resync,
        "dead-letters": commands.cmd_dead_letters,
    }
    return _run(handlers[args.command], args)


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one subcommand; errors a user can act on become a message and an exit code."""
    try:
        return handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"dropsync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, DropsyncError) as exc:
        print(f"dropsync: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        # A damaged store, or one edited by hand beyond its schema: say so, no traceback.
        print(
            f"dropsync: the store could not answer: {exc} "
            "(check it with: sqlite3 STORE 'PRAGMA integrity_check')",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
