"""``dropsync systemd-unit`` warns when the unit's sandbox would hide what ExecStart= runs:
an install under /home (or /root) with ``ProtectHome=``, under /tmp with ``PrivateTmp=``."""

from __future__ import annotations

from pathlib import Path

import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.systemd_unit import hidden_path_warnings

from tests.support import ROOT

SHIPPED = (ROOT / "systemd" / "dropsync.service").read_text()


def unit(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[str, list[str]]:
    assert main(["systemd-unit", *words]) == 0  # a warning never fails the command
    captured = capsys.readouterr()
    return captured.out, captured.err.splitlines()


@pytest.mark.parametrize(
    ("executable", "hidden", "setting", "instead"),
    [
        ("/home/alice/venv/bin/dropsync", "/home", "ProtectHome=yes", "ProtectHome=read-only"),
        ("/root/venv/bin/dropsync", "/root", "ProtectHome=yes", "ProtectHome=read-only"),
        ("/tmp/venv/bin/dropsync", "/tmp", "PrivateTmp=yes", "PrivateTmp=no"),
        ("/var/tmp/venv/bin/dropsync", "/var/tmp", "PrivateTmp=yes", "PrivateTmp=no"),
    ],
)
def test_an_install_the_sandbox_hides_is_warned_of_and_the_files_still_printed(
    capsys: pytest.CaptureFixture[str], executable: str, hidden: str, setting: str, instead: str
) -> None:
    out, err = unit(capsys, "--exec", executable)
    assert f"ExecStart={executable} run --config /etc/dropsync/dropsync.toml\n" in out
    assert "# ===== /etc/tmpfiles.d/dropsync.conf" in out
    assert err == [
        f"dropsync: warning: ExecStart= names {executable}: {hidden} is hidden from the service "
        f"by the unit's {setting}, so it would fail to start (status 203/EXEC). Install "
        "dropsync, and the Python it runs on, outside it (docs/systemd.md: a venv in "
        f"/opt/dropsync) and give that executable as --exec, or set {instead} in a drop-in "
        "(systemctl edit dropsync)"
    ]
    # --only service warns too; the other files have no ExecStart= to warn of.
    out, err = unit(capsys, "--only", "service", "--exec", executable)
    assert out.startswith("# dropsync: local-first sync daemon") and len(err) == 1
    for kind in ("sysusers", "tmpfiles"):
        assert unit(capsys, "--only", kind, "--exec", executable)[1] == []


@pytest.mark.parametrize(
    "executable", ["/opt/dropsync/venv/bin/dropsync", "/usr/local/bin/dropsync", "/homework/d"]
)
def test_an_install_outside_is_not_warned_of(
    capsys: pytest.CaptureFixture[str], executable: str
) -> None:
    assert unit(capsys, "--exec", executable)[1] == []


def test_what_the_executable_runs_is_looked_at_a_link_target_and_its_interpreter(
    tmp_path: Path,
) -> None:
    # pipx links ~/.local/bin/dropsync to its venv; a venv's script names its Python.
    link = tmp_path / "dropsync"
    link.symlink_to("/home/alice/.local/share/pipx/venvs/dropsync/bin/dropsync")
    [home, tmp] = hidden_path_warnings(SHIPPED, str(link))
    assert tmp.startswith(
        f"ExecStart= names {link}: /tmp is hidden from the service by the unit's PrivateTmp=yes"
    )
    assert home.startswith(
        f"ExecStart= names {link}, which runs /home/alice/.local/share/pipx/venvs/dropsync/bin/"
        "dropsync: /home is hidden from the service by the unit's ProtectHome=yes"
    )
    script = tmp_path / "script"
    script.write_text("#!/root/.pyenv/versions/3.11.7/bin/python3.11 -I\nimport sys\n")
    [root, _] = hidden_path_warnings(SHIPPED, str(script))
    assert root.startswith(f"ExecStart= names {script}, which runs /root/.pyenv/versions/3.11.7/")


@pytest.mark.parametrize(
    ("lines", "warned"),
    [
        ("ProtectHome=yes", True),
        ("ProtectHome=true", True),
        ("ProtectHome=tmpfs", True),
        ("ProtectHome=read-only", False),
        ("ProtectHome=no", False),
        ("#ProtectHome=yes", False),
        ("ProtectHome=yes\nProtectHome=no", False),  # the last one counts
        ("", False),
    ],
)
def test_the_unit_decides_what_is_hidden(lines: str, warned: bool) -> None:
    text = f"[Unit]\nProtectHome=yes\n[Service]\nExecStart=/home/a/dropsync run\n{lines}\n"
    assert bool(hidden_path_warnings(text, "/home/a/dropsync")) is warned
