"""``dropsync demo`` and ``dropsync emulate``: the daemon on built-in emulated providers.

The emulators are real HTTP servers on 127.0.0.1, one per kind that has one (its
``Kind.emulator`` and its part of the demo, ``adapters.emulators.demo``). The demo starts
them all on free ports, writes its config file into its folder
(``dropsync-demo/dropsync.toml``, so ``dropsync status --config`` finds its store; the
secrets are environment variables the demo sets, never in the file), drops each part's
sample files, and runs the daemon against them. ``daemon.demo_view`` shows it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import anyio
import orjson
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.demo import DemoPart, Samples
from dropsync.adapters.registry import emulated
from dropsync.store.queries import progress_summary
from dropsync.store.removal import remove_inside

from .config import load_config
from .demo_view import DemoView, is_synced
from .errors import UsageError
from .process.logs import configure_logging
from .process.runner import Daemon

MARKER = "# dropsync demo"  # the first line of the demo's config: its folder may be reset


def demo_parts() -> dict[str, DemoPart]:
    """Each kind's part of the demo (its provider is named after the kind), by port order."""
    return {name: hook.part() for name, hook in emulated()}


def start_order(servers: Mapping[str, EmulatorServer]) -> contextlib.ExitStack:
    """Start ``servers`` in order; the stack stops them all."""
    stack = contextlib.ExitStack()
    for server in servers.values():
        stack.enter_context(server)
    return stack


def write_samples(drop: Path, samples: Samples) -> None:
    """Drop sample files the atomic way (a temporary name, then a rename)."""
    for name, documents in samples.items():
        path = drop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".ndjson"):
            data = b"".join(orjson.dumps(d) + b"\n" for d in documents)
        else:
            data = orjson.dumps(documents, option=orjson.OPT_INDENT_2)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        temporary.rename(path)


def sample_files(drop: Path, parts: Mapping[str, DemoPart]) -> None:
    """Write the sample drop folder."""
    for part in parts.values():
        write_samples(drop, part.samples)


def demo_config(
    directory: Path, parts: Mapping[str, DemoPart], urls: Mapping[str, str], listener_port: int
) -> str:
    """The demo's config file (secrets by environment variable, set by the demo itself)."""
    collections = "\n".join(part.collections for part in parts.values())
    providers = "\n".join(part.provider(urls[name]) for name, part in parts.items())
    return f"""{MARKER}: written by `dropsync demo`; the demo sets the DROPSYNC_DEMO_* variables.
# `dropsync status --config {directory / "dropsync.toml"}` reads it (only [store]).

[store]
path = "{directory / "dropsync.db"}"

[drop]
path = "{directory / "drop"}"
settle_ms = 20

[listener]
port = {listener_port}
public_url = "http://127.0.0.1:{listener_port}"

{collections}
{providers}"""


def demo_environment(parts: Mapping[str, DemoPart]) -> dict[str, str]:
    """The demo's secrets, as the variables its config names."""
    return {name: value for part in parts.values() for name, value in part.environment.items()}


def prepare_folder(directory: Path) -> None:
    """A fresh demo folder: a previous demo's is cleared; any other non-empty folder refused."""
    config = directory / "dropsync.toml"
    if directory.exists() and any(directory.iterdir()):
        if not (config.is_file() and config.read_text(encoding="utf-8").startswith(MARKER)):
            raise UsageError(
                f"{directory} is not empty and holds no earlier demo: give another --dir"
            )
        for entry in directory.iterdir():
            remove_inside(entry, directory)
    directory.mkdir(parents=True, exist_ok=True)


def run_demo(directory: Path, *, exit_when_synced: bool) -> int:
    """Run the daemon on sample files in ``directory`` against every kind's emulator."""
    directory = directory.resolve()
    prepare_folder(directory)
    listener_port = _free_port()
    parts = demo_parts()
    listener_url = f"http://127.0.0.1:{listener_port}"
    servers = {name: part.serve(0, "127.0.0.1", listener_url) for name, part in parts.items()}
    pulled = {collection for part in parts.values() for collection in part.pulled}

    def synced_also(db: sqlite3.Connection) -> bool:
        # Synced once confirmations arrived and each pulling provider answered.
        return is_synced(progress_summary(db), pulled)

    with start_order(servers):
        os.environ.update(demo_environment(parts))
        config_path = directory / "dropsync.toml"
        urls = {name: server.base_url for name, server in servers.items()}
        config_path.write_text(demo_config(directory, parts, urls, listener_port), encoding="utf-8")
        config = load_config(str(config_path))
        # Not on a terminal (a pipe, a file), stdout carries the daemon's JSON lines only
        # (`dropsync demo | jq`); the banner and the summary go to stderr.
        on_terminal = sys.stdout.isatty()
        view = DemoView(
            directory,
            config_path,
            config.store_path,
            servers,
            parts,
            keeps_running=not exit_when_synced,
            out=None if on_terminal else sys.stderr,
            interactive=on_terminal,
        )
        if view.interactive:
            configure_logging(config.log_level, view.log_file())
        else:
            configure_logging(config.log_level)
        view.intro()

        def ready() -> None:
            # Dropped once the daemon runs, as files arrive in real life.
            sample_files(config.drop_path, parts)
            view.start()

        daemon = Daemon(
            config,
            config_arg=str(config_path),
            exit_when_synced=exit_when_synced,
            synced_also=synced_also,
            on_ready=ready,
        )
        try:
            code = anyio.run(daemon.run)
        finally:
            view.stop()
        missing = view.summary(synced=code == 0 and exit_when_synced)
        # Dead letters and rejections leave nothing pending, so the daemon calls it synced:
        # the demo does not, since not every sample reached its provider.
        return 1 if code == 0 and missing else code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_emulators(host: str, ports: Mapping[str, int]) -> int:
    """Serve every kind's emulator (on ``ports[kind]``) until SIGINT/SIGTERM."""
    parts = demo_parts()
    servers = {name: part.serve(ports[name], host, None) for name, part in parts.items()}
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with start_order(servers):
        for name, part in parts.items():
            print(part.announce(servers[name]), flush=True)
        print(
            "faults: POST /_emulator/faults, state: GET /_emulator/state; Ctrl-C stops", flush=True
        )
        stop.wait()
    return 0
