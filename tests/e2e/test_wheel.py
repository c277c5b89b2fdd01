"""The wheel: one top-level package, ``dropsync``, that lives beside python-daemon.

An earlier wheel installed top-level ``daemon``, ``store`` and ``adapters``, and
installing it broke python-daemon (``import daemon; daemon.DaemonContext`` gone). The
wheel is built from a copy of the sources without a network (``--no-build-isolation``,
setuptools from the dev set-up) and installed with ``--no-deps`` into a fresh venv that
sees the dev venv's packages (the dependencies, and python-daemon from the dev extra)
through a ``.pth`` line, after its own.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.e2e  # builds, installs and runs the demo: `-m "not e2e"` skips it

CODE_FOLDERS = ("daemon", "store", "adapters")
MAKE_STORE = """
import sys, anyio, pathlib
from dropsync.store.db import open_store
async def make():
    await (await open_store(pathlib.Path(sys.argv[1]))).close()
anyio.run(make)
"""


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in (*CODE_FOLDERS, "bin"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = out.glob("dropsync-*.whl")
    return wheel


def test_the_wheel_installs_only_dropsync_and_python_daemon_still_works(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["dropsync"]
    data = top_level.split("/")[0].replace(".dist-info", ".data")
    assert {name.split("/")[0] for name in names} == {"dropsync", top_level.split("/")[0], data}
    assert [name for name in names if name.startswith(data)] == [f"{data}/scripts/dropsync"]
    # Every module of the code folders is in it (a new subpackage not listed in pyproject
    # would be missing from the wheel while the editable install still finds it).
    shipped = {n for n in names if n.endswith((".py", ".sql"))}
    for folder in CODE_FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
                assert f"dropsync/{path.relative_to(ROOT).as_posix()}" in shipped, path

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin/python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dev venv's packages after the fresh venv's own (a plain path: its .pth files, such
    # as the editable install of this checkout, are not run).
    dev_packages = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "dev-packages.pth").write_text("\n".join(dict.fromkeys(dev_packages)) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import dropsync.daemon.cli as c, daemon; print(c.__file__)"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(purelib))  # the wheel's, not this checkout's
    python_daemon = subprocess.run(
        [str(python), "-c", "import daemon; print(daemon.DaemonContext.__name__)"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert python_daemon.stdout.strip() == "DaemonContext", python_daemon.stderr
    demo = subprocess.run(
        [str(venv / "bin/dropsync"), "demo", "--exit-when-synced"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert '"event":"synced"' in demo.stdout
    # The installed command is bin/dropsync, not a generated one: pip's imports re, which
    # (with enum) is a third of what `import sqlite3` costs; status imports neither.
    script = (venv / "bin/dropsync").read_text()
    assert script.startswith(f"#!{python}") and "import re" not in script, script
    config = work / "dropsync.toml"
    config.write_text(f'[store]\npath = "{work / "demo-store.db"}"\n')
    made = subprocess.run(  # a store as the daemon leaves it (status makes none)
        [str(python), "-c", MAKE_STORE, str(work / "demo-store.db")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    # Without the coverage measurement CI runs the suite under (it imports json at start).
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE")}
    for words in (["status", "--json"], ["status"], ["status", "--check"]):
        timed = subprocess.run(
            [
                str(python),
                "-X",
                "importtime",
                str(venv / "bin/dropsync"),
                *words,
                "--config",
                str(config),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        imported = {line.split("|")[-1].strip() for line in timed.stderr.splitlines()}
        assert "sqlite3" in imported, timed.stderr[-2000:]
        assert imported & {"re", "enum", "json", "typing", "pathlib"} == set(), words
