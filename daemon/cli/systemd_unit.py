"""``dropsync systemd-unit``: the unit, sysusers and tmpfiles files for this installation.

The files are those in the repository's ``systemd/`` (shipped in the package), with
``ExecStart=`` pointing at the ``dropsync`` executable that is running now, so an
install by pipx, uv or pip into any venv needs nothing from the repository.

An executable the service cannot see is warned of on stderr (the files are printed all
the same, exit 0): one under ``/home``, ``/root`` or ``/run/user`` while the unit sets
``ProtectHome=``, or under ``/tmp`` or ``/var/tmp`` while it sets ``PrivateTmp=``; the
executable's link target and its interpreter (``#!``) are looked at too.
"""

from __future__ import annotations

import argparse

from .common import EXIT_OK

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


# What a sandboxing setting hides from the service, and the values that hide it.
_HIDDEN = {
    "ProtectHome": (("/home", "/root", "/run/user"), {"yes", "true", "on", "1", "tmpfs"}),
    "PrivateTmp": (("/tmp", "/var/tmp"), {"yes", "true", "on", "1", "disconnected"}),
}
_INSTEAD = {
    "ProtectHome": "ProtectHome=read-only",
    "PrivateTmp": "PrivateTmp=no",
}


def unit_settings(text: str) -> dict[str, str]:
    """The last value of each ``Key=value`` line of a unit's ``[Service]`` section."""
    settings: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def _paths_run(executable: str) -> list[str]:
    """The executable, where its links lead, and the interpreter of its ``#!`` line."""
    import os

    if not executable.startswith("/"):
        return [executable]
    paths = [executable, os.path.realpath(executable)]
    try:
        with open(paths[-1], "rb") as script:
            first = script.readline(4096)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words and words[0].startswith("/"):
            paths += [words[0], os.path.realpath(words[0])]
    return list(dict.fromkeys(paths))


def hidden_path_warnings(unit: str, executable: str) -> list[str]:
    """What to tell when the unit's sandbox hides a file the service needs to start: one
    warning per setting, naming the first such file."""
    settings = unit_settings(unit)
    warnings = []
    for key, (folders, hiding) in _HIDDEN.items():
        if settings.get(key, "").lower() not in hiding:
            continue
        for path in _paths_run(executable):
            hidden = next((f for f in folders if path == f or path.startswith(f + "/")), None)
            if hidden is None:
                continue
            runs = "" if path == executable else f", which runs {path}"
            warnings.append(
                f"ExecStart= names {executable}{runs}: {hidden} is hidden from the service by "
                f"the unit's {key}={settings[key]}, so it would fail to start (status 203/EXEC). "
                "Install dropsync, and the Python it runs on, outside it (docs/systemd.md: a "
                "venv in /opt/dropsync) and "
                f"give that executable as --exec, or set {_INSTEAD[key]} in a drop-in "
                "(systemctl edit dropsync)"
            )
            break
    return warnings


def run(args: argparse.Namespace) -> int:
    """Print one file, or all three with where each goes."""
    import sys

    from .common import refuse_config

    refuse_config(args, "systemd-unit", "the unit names /etc/dropsync/dropsync.toml")
    executable = args.exec or installed_executable()
    if args.only in (None, "service"):
        for warning in hidden_path_warnings(unit_file(FILES["service"][0], executable), executable):
            print(f"dropsync: warning: {warning}", file=sys.stderr)
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
