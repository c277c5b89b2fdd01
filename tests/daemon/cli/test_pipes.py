"""The command line where shell pipelines and busy ports meet it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
from dropsync.store.handle import Store

DROPSYNC = [sys.executable, "-m", "dropsync.daemon.cli"]


def test_a_reader_that_goes_away_is_not_an_error(tmp_path: Path) -> None:
    # `dropsync completion bash | head -1` and `dropsync status --watch | head -1`.
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n')

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    for words in (
        ["completion", "bash"],
        ["status", "--watch", "0.01", "--config", str(config)],
        ["--help"],
    ):
        shell = subprocess.run(
            ["bash", "-c", 'set -o pipefail; "$@" | head -c 1 >/dev/null', "-", *DROPSYNC, *words],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shell.stderr == "", (words, shell.stderr)
        assert shell.returncode == 0, (words, shell.returncode)


def test_a_check_piped_into_head_keeps_its_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'set -o pipefail; "$@" | head -c 1 >/dev/null',
            "-",
            *DROPSYNC,
            "status",
            "--check",
            "--config",
            str(config),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stderr == ""
    assert shell.returncode == 3  # UNKNOWN: no store to check


def test_emulate_on_a_busy_port_says_port_n_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                *DROPSYNC,
                "emulate",
                "--crm-port",
                "0",
                "--favourites-port",
                str(port),
                "--registrations-port",
                "0",
                "--churn-port",
                "0",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"dropsync: emulate: port {port} in use on 127.0.0.1")
    assert "Traceback" not in done.stderr


def test_a_probe_whose_reader_went_away_keeps_its_exit_code(tmp_path: Path) -> None:
    # `dropsync probe | true`: the reader is gone long before the probe prints.
    config = tmp_path / "dropsync.toml"
    config.write_text(
        '[providers.crm]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\naccount_id = "a"\n'
        'secret_env = "PIPE_PROBE_TOKEN"\n'
    )
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'set -o pipefail; "$@" | true',
            "-",
            *DROPSYNC,
            "probe",
            "--config",
            str(config),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PIPE_PROBE_TOKEN": "pipe-token"},
    )
    assert shell.stderr == ""
    assert shell.returncode == 1  # crm is unreachable
