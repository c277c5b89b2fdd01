"""Campaign 8: secrets. Distinctive secrets in systemd credential files; providers that echo
the request's ``Authorization`` header back in 400/401/422/500 bodies, a pull that crashes;
then every place a secret could end up is searched."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.harness.faults import resume_auth_failed
from tests.harness.world import CRM_TOKEN, FAVOURITE_TOKENS, World, make_world

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(300)]

SECRETS = (CRM_TOKEN, *FAVOURITE_TOKENS.values())
ECHO_ROUNDS = 8  # half-second rounds in which every answer echoes Authorization
PLACES = (
    "daemon log",
    "store",
    "store WAL",
    "status --json",
    "dead-letters list",
    "probe --json",
    "/proc/<pid>/environ",
    "/proc/<parser pid>/environ",
)


def _cli(world: World, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropsync.daemon.cli",
            *args,
            "--config",
            str(world.daemon.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    return done.stdout + done.stderr


def _child_environ(pid: int, timeout: float = 20.0) -> bytes:
    """The environment of the first child process of ``pid`` seen within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A child is listed under the thread that started it (the parser: a worker thread).
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    environ = Path(f"/proc/{child}/environ").read_bytes()
                    if environ:  # an exited child (not yet reaped) reads as empty
                        return environ
        time.sleep(0.001)
    return b""


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory, seed: int) -> Iterator[dict[str, bytes]]:
    """The text of every place searched, after the secrets were given every chance to leak."""
    world = make_world(
        tmp_path_factory.mktemp("secrets"), seed, proxies=True, secrets_via="credential"
    )
    found: dict[str, bytes] = {}
    try:
        world.daemon.start()
        process = world.daemon.process
        assert process is not None
        found["/proc/<pid>/environ"] = Path(f"/proc/{process.pid}/environ").read_bytes()
        # A big file goes to a parser process: its environment too.
        world.load.drop_file("users", count=30_000, bad=False)
        found["/proc/<parser pid>/environ"] = _child_environ(process.pid)
        for name in ("crm", "favourites"):
            world.proxy(name).set_plan({"echo_auth": 1.0})
        statuses, probes = [], []
        for _ in range(ECHO_ROUNDS):
            world.load.drop_file("contacts", count=5, bad=False)
            world.load.drop_file("favourites", count=3, bad=False)
            world.run_for(0.5)
            resume_auth_failed(world)  # an echoed 401 pauses a provider until a reload
            statuses.append(_cli(world, "status", "--json"))
            # The probe reads the daemon's credentials, and its answers echo them too.
            probes.append(_cli(world, "probe", "--json", env=world.daemon.env))
        for name in ("crm", "favourites"):
            world.proxy(name).set_plan({})
        found["status --json"] = "\n".join(statuses).encode()
        found["probe --json"] = "\n".join(probes).encode()
        found["dead-letters list"] = _cli(world, "dead-letters", "list").encode()
        found["echoes"] = str(
            sum(world.proxy(n).injected["echo_auth"] for n in ("crm", "favourites"))
        ).encode()
        world.stop()
        found["daemon log"] = world.daemon.log_path.read_bytes()
        found["store"] = world.store.read_bytes()
        wal = world.root / "store.db-wal"
        found["store WAL"] = wal.read_bytes() if wal.exists() else b""
        yield found
    finally:
        world.close()


def test_the_echoing_answers_reached_the_daemon(places: dict[str, bytes]) -> None:
    assert int(places["echoes"]) >= 8, places["echoes"]
    assert places["/proc/<parser pid>/environ"], "no parser process was seen"
    assert b"HTTP 4" in places["daemon log"] or b"HTTP 5" in places["daemon log"]
    assert b'"state": "ok"' in places["probe --json"], places["probe --json"][:2000]


@pytest.mark.parametrize("place", PLACES)
def test_no_secret_appears(places: dict[str, bytes], place: str) -> None:
    text = places[place]
    leaked = [s for s in SECRETS if s.encode() in text or orjson.dumps(s)[1:-1] in text]
    assert not leaked, f"{place} holds {len(leaked)} secret(s)"
