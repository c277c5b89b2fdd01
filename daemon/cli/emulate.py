"""``dropsync emulate``: the provider emulators alone, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from dropsync.daemon.cli.common import refuse_config

HELP = (
    "run the provider emulators alone (CRM on 8081, favourites on 8082, registrations on "
    "8083, churn on 8084)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--crm-port``, ``--favourites-port``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--crm-port",
        type=int,
        default=8081,
        metavar="PORT",
        help="port of the CRM emulator (default: 8081)",
    )
    parser.add_argument(
        "--favourites-port",
        type=int,
        default=8082,
        metavar="PORT",
        help="port of the favourites emulator (default: 8082)",
    )
    parser.add_argument(
        "--registrations-port",
        type=int,
        default=8083,
        metavar="PORT",
        help="port of the registrations emulator (default: 8083)",
    )
    parser.add_argument(
        "--churn-port",
        type=int,
        default=8084,
        metavar="PORT",
        help="port of the churn tool emulator (default: 8084)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve the emulators until a stop signal."""
    refuse_config(args, "emulate", "the emulators take --host and their ports")
    import errno

    from dropsync.daemon.demo import run_emulators
    from dropsync.daemon.errors import DropsyncError

    try:
        return run_emulators(
            args.host,
            crm_port=args.crm_port,
            favourites_port=args.favourites_port,
            registrations_port=args.registrations_port,
            churn_port=args.churn_port,
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise DropsyncError(
            f"emulate: {exc.strerror}: another program listens there; stop it or choose "
            "other ports (--crm-port, --favourites-port, --registrations-port, --churn-port)"
        ) from None
