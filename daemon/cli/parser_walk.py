"""What the argument parser accepts, read once for the texts made from it.

The shell completions (``dropsync completion``) and the manual page (``dropsync man``)
are generated from the very parser the command line uses, so each lists exactly what
``dropsync`` accepts. This module turns that parser into plain values: commands, their
options (with metavar, choices and help) and their positional arguments.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Arguments whose values are paths: completed as file names.
PATH_METAVARS = frozenset({"FILE", "DIR", "PATH"})


@dataclass(frozen=True, slots=True)
class Option:
    """One option (``--json``) or positional argument (``PROVIDER``) of a parser."""

    flags: tuple[str, ...]  # empty for a positional argument
    help: str
    metavar: str | None  # None: the option takes no value
    choices: tuple[str, ...] = ()
    optional_value: bool = False  # nargs="?": the value may be left out

    @property
    def takes_path(self) -> bool:
        """Whether its value is a file or folder name."""
        return self.metavar in PATH_METAVARS


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command: its name, its one-line help, its options and positional arguments."""

    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Option, ...]


def _option(action: argparse.Action) -> Option:
    choices = tuple(str(c) for c in action.choices) if action.choices is not None else ()
    metavar: str | None
    if action.nargs == 0:
        metavar = None
    elif isinstance(action.metavar, str):
        metavar = action.metavar
    elif choices:
        metavar = "{" + ",".join(choices) + "}"
    else:
        metavar = action.dest.upper()
    help_text = "" if action.help in (None, argparse.SUPPRESS) else str(action.help)
    return Option(tuple(action.option_strings), help_text, metavar, choices, action.nargs == "?")


def split_actions(parser: argparse.ArgumentParser) -> tuple[list[Option], list[Option]]:
    """(options, positional arguments) of one parser, subcommands left out."""
    options: list[Option] = []
    positionals: list[Option] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        (options if action.option_strings else positionals).append(_option(action))
    return options, positionals


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command, by name, in the command table's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_specs(parser: argparse.ArgumentParser) -> list[CommandSpec]:
    """Every command of the whole ``dropsync`` parser."""
    specs = []
    for name, sub in subcommands(parser).items():
        options, positionals = split_actions(sub)
        specs.append(CommandSpec(name, sub.description or "", tuple(options), tuple(positionals)))
    return specs
