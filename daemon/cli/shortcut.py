"""The entry point, and the short path of ``dropsync status``: its usual command lines
read without argparse.

``status`` is run often (a monitoring check every minute, ``watch``, an operator's shell)
and should take little more than starting Python. argparse costs it more than its queries:
importing it (with gettext, locale and shutil) and building the parser (it formats each
option as it is added). A command line made only of the words ``status``, ``--json`` and
``--check`` after it, and the global options ``--config FILE`` and ``--log-format
json|console`` (``--opt VALUE`` or ``--opt=VALUE``) anywhere, is read here into the
namespace argparse would make of it; anything else (help, a threshold, ``--watch``, an
abbreviation, a value that starts with ``-``, a mistake) goes the whole way through
``app.main``. ``tests/daemon/test_cli_shortcut.py`` checks that both read every such
line alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

_FLAGS = {"--json": "json", "--check": "check"}  # status's own, after the command
_GLOBAL = {"--config": "config", "--log-format": "log_format"}  # anywhere
_LOG_FORMATS = ("json", "console")


def status_args(words: Sequence[str]) -> SimpleNamespace | None:
    """What argparse would make of ``words``, if they are a plain ``status`` command line
    (see the module's docstring); None for any other."""
    values: dict[str, object] = {"config": None, "log_format": None, "json": False}
    values["check"] = False
    command = False
    position = 0
    while position < len(words):
        word = words[position]
        position += 1
        if word == "status" and not command:
            command = True
        elif word in _FLAGS and command:
            values[_FLAGS[word]] = True
        else:
            name, equals, value = word.partition("=")
            if name not in _GLOBAL:
                return None
            if not equals:
                if position == len(words):
                    return None
                value = words[position]
                position += 1
            if not value or value.startswith("-"):
                return None
            if name == "--log-format" and value not in _LOG_FORMATS:
                return None
            values[_GLOBAL[name]] = value
    if not command:
        return None
    from . import common

    return SimpleNamespace(
        command="status",
        watch=None,
        pending_warn=common.PENDING_WARN_S,
        pending_crit=common.PENDING_CRIT_S,
        disk_warn=common.DISK_WARN_PCT,
        disk_crit=common.DISK_CRIT_PCT,
        **values,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropsync`` console script (and ``python -m dropsync.daemon.cli``)."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = status_args(words)
    if args is None:
        from .app import main as parse_and_run

        return parse_and_run(words)
    if args.log_format:
        os.environ["DROPSYNC_LOG_FORMAT"] = args.log_format  # as app.main does
    from . import status
    from .outcome import run_reporting_errors

    return run_reporting_errors("status", status.run, args)  # type: ignore[arg-type]
