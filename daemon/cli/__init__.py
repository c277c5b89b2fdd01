"""The ``dropsync`` command line: one table of commands, one module per command.

``app.COMMANDS`` maps each command name to its module in this package; a module
is imported only when its command runs (or when ``--help`` or the completion
script lists them all), so ``dropsync status`` loads nothing of the daemon.
Each command module declares (see ``app.Command``):

* ``HELP``: one line for ``dropsync --help``;
* ``add_arguments(parser)``: its own arguments, each with help text;
* ``run(args) -> int``: the command; it imports what it needs inside.

Adding a command is one new module plus one line in ``app.COMMANDS``. ``main`` (in
``shortcut``) reads the usual ``status`` command lines without argparse, and hands every
other to ``app.main``. Global
options (``--config``) are declared once in ``app.GLOBAL_OPTIONS`` and accepted
before or after the command. Exit codes: 0 ok, 2 usage or config error (the
message names the file and key), 1 any other failure.
"""

from __future__ import annotations

from .shortcut import main

__all__ = ["main"]
