"""``dropsync systemd-unit``: the unit, sysusers and tmpfiles files for this installation.

The files are those in the repository's ``systemd/`` (shipped in the package), with
``ExecStart=`` pointing at the ``dropsync`` executable that is running now, so an
install by pipx, uv or pip into any venv needs nothing from the repository.
"""

from __future__ import annotations

import argparse

from dropsync.daemon.cli.common import EXIT_OK

HELP = "print the systemd unit, sysusers and tmpfiles files, ExecStart= naming this dropsync"

SHIPPED_EXEC = "/opt/dropsync/venv/bin/dropsync"
FILES = {
    "service": ("dropsync.service", "/etc/systemd/system/dropsync.service"),
    "sysusers": ("dropsync.sysusers", "/etc/sysusers.d/dropsync.conf"),
    "tmpfiles": ("dropsync.tmpfiles", "/etc/tmpfiles.d/dropsync.conf"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--only``, ``--exec``."""
    parser.add_argument(
        "--only",
        choices=sorted(FILES),
        help="print only this file, as it is to be installed (for a redirect or tee)",
    )
    parser.add_argument(
        "--exec",
        metavar="FILE",
        help="the dropsync executable ExecStart= names (default: the one running now)",
    )


def installed_executable() -> str:
    """The absolute path of the ``dropsync`` console script of this installation."""
    import os
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "dropsync"  # a venv, pipx's or uv's included
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    argv0 = Path(sys.argv[0])
    if argv0.name == "dropsync" and argv0.is_file():
        return str(argv0.absolute())
    found = shutil.which("dropsync")
    return str(Path(found).absolute()) if found else str(beside)


def unit_file(name: str, executable: str) -> str:
    """A shipped file's text, the service's ExecStart= naming ``executable``."""
    from importlib.resources import files

    text = files("dropsync.daemon").joinpath("unit_files", name).read_text(encoding="utf-8")
    return text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={executable} ")


def run(args: argparse.Namespace) -> int:
    """Print one file, or all three with where each goes."""
    from dropsync.daemon.cli.common import refuse_config

    refuse_config(args, "systemd-unit", "the unit names /etc/dropsync/dropsync.toml")
    executable = args.exec or installed_executable()
    if args.only:
        print(unit_file(FILES[args.only][0], executable), end="")
        return EXIT_OK
    for kind, (name, target) in FILES.items():
        print(f"# ===== {target} (dropsync systemd-unit --only {kind}) =====")
        print(unit_file(name, executable))
    print("# Install: docs/systemd.md; in short:")
    for kind, (_, target) in FILES.items():
        print(f"#   dropsync systemd-unit --only {kind} | sudo tee {target} >/dev/null")
    print("#   sudo systemd-sysusers && sudo systemd-tmpfiles --create")
    print("#   sudo systemctl daemon-reload && sudo systemctl enable --now dropsync")
    return EXIT_OK
