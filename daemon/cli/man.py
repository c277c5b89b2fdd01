"""``dropsync man``: the manual page, made from the command table, as roff.

``dropsync man | man -l -`` reads it; ``dropsync man > /usr/local/share/man/man1/dropsync.1``
installs it for ``man dropsync``. Like the shell completions it is generated from the
parser the command line uses (``cli.parser_walk``), so it documents exactly the commands
and options ``dropsync --help`` lists.
"""

from __future__ import annotations

import argparse

from .common import EXIT_OK, refuse_config
from .parser_walk import Option, command_specs, split_actions

HELP = "print the manual page (roff): 'dropsync man | man -l -'"

ENVIRONMENT = (
    ("DROPSYNC_CONFIG", "the config file when --config is not given"),
    ("DROPSYNC_LOG_FORMAT", "json or console: the log format when --log-format is not given"),
    (
        "STATE_DIRECTORY",
        "set by systemd (StateDirectory=): relative paths of the config resolve against it",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "set by systemd (LoadCredential=): where a provider's credential = NAME is read",
    ),
)
EXIT_STATUS = (
    ("0", "success"),
    ("1", "any other failure (the message says what)"),
    ("2", "a usage or config error; the message names the file and the key"),
)
SEE_ALSO = (
    "The documentation in the project's docs/ folder: quickstart.md, cli.md, config.md, "
    "providers.md, drop-folder.md, schema.md, systemd.md, operations.md, troubleshooting.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments of its own."""


def run(args: argparse.Namespace) -> int:
    """Print the page."""
    from .app import build_parser

    refuse_config(args, "man", "the page is the same for every config")
    print(man_page(build_parser(), _version()), end="")
    return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dropsync")
    except PackageNotFoundError:
        return "unknown"


def roff(text: str) -> str:
    """``text`` safe in a roff line: backslashes and hyphens escaped, no control word start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _option_lines(option: Option) -> list[str]:
    flags = ", ".join(f"\\fB{roff(flag)}\\fR" for flag in option.flags)
    if option.metavar is not None:
        value = f"\\fI{roff(option.metavar)}\\fR"
        flags += f" [{value}]" if option.optional_value else f" {value}"
    return [".TP", flags, roff(option.help or "")]


def _positional_words(positionals: tuple[Option, ...]) -> str:
    return " ".join(f"\\fI{roff(p.metavar or '')}\\fR" for p in positionals)


def man_page(parser: argparse.ArgumentParser, version: str) -> str:
    """The whole page for ``parser`` (the ``dropsync`` parser), roff ``man`` macros."""
    top, _ = split_actions(parser)
    lines = [
        f'.TH DROPSYNC 1 "" "dropsync {roff(version)}" "User Commands"',
        ".SH NAME",
        "dropsync \\- local\\-first, offline\\-tolerant sync daemon",
        ".SH SYNOPSIS",
        ".B dropsync",
        "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-log\\-format\\fR "
        "\\fIjson\\fR|\\fIconsole\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        ".PP",
        roff(parser.epilog or ""),
        ".SH COMMANDS",
    ]
    for spec in command_specs(parser):
        words = _positional_words(spec.positionals)
        lines += [f'.SS "dropsync {roff(spec.name)}" {words}'.rstrip(), roff(spec.help)]
        for positional in spec.positionals:
            lines += _option_lines(positional)
        for option in spec.options:
            if option.flags in (("-h", "--help"), ("--config",), ("--log-format",)):
                continue  # the global options, described once below
            lines += _option_lines(option)
    lines.append(".SH GLOBAL OPTIONS")
    lines.append("These work before or after the command.")
    for option in top:
        lines += _option_lines(option)
    lines.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{roff(name)}\\fR", roff(meaning)]
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", roff(meaning)]
    lines += [".SH SEE ALSO", roff(SEE_ALSO)]
    return "\n".join(lines) + "\n"
