"""The command table, the argument parser built from it, and running one command.

Building every command's parser takes longer than ``status`` takes to answer, so
``main`` builds only the one being run; help, usage errors and the completion
script build them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol, cast

from .common import EXIT_USAGE

# command name -> its module in dropsync.daemon.cli (imported only when needed)
COMMANDS: dict[str, str] = {
    "run": "run",
    "demo": "demo",
    "status": "status",
    "ingest": "ingest",
    "check-config": "check_config",
    "probe": "probe",
    "emulate": "emulate",
    "why": "why",
    "resync": "resync",
    "dead-letters": "dead_letters",
    "backup": "backup",
    "migrate": "migrate",
    "init": "init",
    "systemd-unit": "systemd_unit",
    "completion": "completion",
    "man": "man",
}

# Options every command accepts, before or after the command name: (flags, add_argument kwargs).
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--config",),
        {
            "metavar": "FILE",
            "help": "the TOML config file (default: $DROPSYNC_CONFIG, else the built-in defaults)",
        },
    ),
    (
        ("--log-format",),
        {
            "choices": ["json", "console"],
            "help": "log lines as JSON objects or for people (default: $DROPSYNC_LOG_FORMAT, "
            "else console on a terminal and JSON otherwise)",
        },
    ),
)

DESCRIPTION = (
    "dropsync: a local-first, offline-tolerant sync daemon. Drop JSON files into a folder or "
    "INSERT rows into its SQLite inbox; dropsync merges every change by last-write-wins and "
    "delivers the winners to each provider whenever it is reachable."
)
EPILOG = (
    "Global options work before or after the command. Exit codes: 0 ok, 2 usage or config "
    "error, 1 any other failure. 'dropsync COMMAND --help' shows a command's options."
)


class Command(Protocol):
    """What a command module declares.

    It may also define ``usage_error(words, message) -> int | None``: told of a usage error
    in its command line (already reported on stderr), it may print its own answer and
    return the exit code to use instead of 2 (``status --check``: a plugin's UNKNOWN, 3).
    """

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's own arguments (each with help text)."""

    def run(self, args: argparse.Namespace) -> int:
        """Run the command; the exit code."""


class UsageExit(SystemExit):
    """A usage error argparse reported (exit 2), with its message."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"dropsync: error: {message}\n")
        raise UsageExit(message)


class _Version(argparse.Action):
    """``--version``: reads the installed distribution's version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version of dropsync and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("dropsync")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        print(f"dropsync {text}")
        parser.exit(0)


def load_command(name: str) -> Command:
    """The module of command ``name`` (imported on first use)."""
    return cast(Command, importlib.import_module(f"dropsync.daemon.cli.{COMMANDS[name]}"))


# The global options that take a value (the next word), which is never the command's name.
_VALUE_FLAGS = frozenset(
    flag
    for flags, kwargs in GLOBAL_OPTIONS
    if kwargs.get("action") in (None, "store")
    for flag in flags
)


def command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option), if known."""
    words = iter(argv)
    for word in words:
        if word in _VALUE_FLAGS:
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` alone."""
    parser = _Parser(
        prog="dropsync",
        description=DESCRIPTION,
        epilog=EPILOG,
        allow_abbrev=False,  # an abbreviated global option would hide the command's name
    )
    parser.add_argument("--version", action=_Version)
    for flags, kwargs in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **kwargs)
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        title="commands",
        help="one of these:",
        parser_class=_Parser,
    )
    for name in COMMANDS if only is None else (only,):
        command = load_command(name)
        sub = commands.add_parser(name, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
        shared = sub.add_argument_group("global options")
        for flags, kwargs in GLOBAL_OPTIONS:
            # SUPPRESS: when not given after the command, the value given before it stays.
            shared.add_argument(*flags, **{**kwargs, "default": argparse.SUPPRESS})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropsync`` console script."""
    from .outcome import run_reporting_errors

    words = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(command_in(words)).parse_args(words)
    except (
        SystemExit
    ) as exc:  # --help, --version, a usage error: flush now, quietly if nobody reads
        code = _usage_error(words, exc.message) if isinstance(exc, UsageExit) else None
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            from .outcome import silence_stdout

            silence_stdout()
        if code is not None:
            return code
        raise
    if args.log_format:
        # Read by daemon.process.logs whenever logging is configured (a reload too), and by nothing
        # else: the environment is the one place both the CLI and the daemon look.
        os.environ["DROPSYNC_LOG_FORMAT"] = args.log_format
    command = load_command(args.command)
    return run_reporting_errors(args.command, command.run, args)


def _usage_error(words: list[str], message: str) -> int | None:
    """The exit code the named command gives a usage error of its own, if it has one."""
    name = command_in(words)
    hook = getattr(load_command(name), "usage_error", None) if name is not None else None
    return hook(words, message) if hook is not None else None
