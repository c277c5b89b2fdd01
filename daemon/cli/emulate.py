"""``dropsync emulate``: the provider emulators alone, until SIGINT/SIGTERM.

One emulator per kind that has one (``Kind.emulator``), each on its own port option,
``--<kind>-port``.
"""

from __future__ import annotations

import argparse

from dropsync.adapters.registry import emulated

from .common import refuse_config

HELP = "run the provider emulators alone ({})".format(
    ", ".join(f"{hook.title} on {hook.port}" for _, hook in emulated())
)


def _dest(kind: str) -> str:
    return f"{kind}_port"


def _flag(kind: str) -> str:
    return f"--{kind}-port"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, and ``--<kind>-port`` for each kind's emulator."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    for kind, hook in emulated():
        parser.add_argument(
            _flag(kind),
            dest=_dest(kind),
            type=int,
            default=hook.port,
            metavar="PORT",
            help=f"port of the {hook.title} emulator (default: {hook.port})",
        )


def run(args: argparse.Namespace) -> int:
    """Serve the emulators until a stop signal."""
    refuse_config(args, "emulate", "the emulators take --host and their ports")
    import errno

    from ..demo import run_emulators
    from ..errors import DropsyncError

    kinds = [kind for kind, _ in emulated()]
    try:
        return run_emulators(args.host, {kind: getattr(args, _dest(kind)) for kind in kinds})
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise DropsyncError(
            f"emulate: {exc.strerror}: another program listens there; stop it or choose "
            f"other ports ({', '.join(_flag(kind) for kind in kinds)})"
        ) from None
