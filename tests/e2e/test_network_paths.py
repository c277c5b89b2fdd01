"""The daemon subprocess on the networks real deployments have: proxies named by the
service's environment (one that asks for its own credentials, one that cannot be used, one
that is not there). Nothing is dead-lettered for the network's fault, the daemon stays up,
and `status` says why nothing goes out."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer

from tests.e2e.crm_support import crm_config
from tests.support import DaemonProcess, drop_json, free_port, query, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

SECRET = "s3cr3t-crm-token-5d1c0b"
PROXY_PASSWORD = "pr0xy-pass-9a8b7c"
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


class _ProxyAuthRequired(http.server.BaseHTTPRequestHandler):
    """A proxy that answers every request 407 (it wants credentials of its own)."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"<html><body>Proxy authentication required</body></html>"
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_CONNECT = _answer  # noqa: N815 (http.server names them so)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def crm() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": SECRET})) as server:
        yield server


@pytest.fixture
def proxy_407() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyAuthRequired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def start(tmp_path: Path, base_url: str, proxies: dict[str, str]) -> DaemonProcess:
    """The daemon with only these proxy variables in its environment (an empty lower-case
    one would unset its upper-case twin, so the others are removed, not emptied)."""
    daemon = DaemonProcess(
        tmp_path,
        crm_config(tmp_path, base_url, 'secret_env = "T_CRM"', backoff_cap_s=0.3),
        env={"T_CRM": SECRET},
    )
    for variable in PROXY_VARIABLES:
        daemon.env.pop(variable, None)
    daemon.env.update(proxies)
    daemon.start()
    docs = [{"email": f"c{i}@example.com", "updated_at": 1_700_000_000_000 + i} for i in range(4)]
    drop_json(tmp_path / "drop/contacts", "c", docs)
    return daemon


def provider_row(tmp_path: Path) -> tuple[str, str | None]:
    rows = query(tmp_path / "store.db", "SELECT state, last_error FROM providers")
    return rows[0] if rows else ("", None)


def settled(tmp_path: Path) -> bool:
    """The provider says why nothing goes out, or something was dead-lettered."""
    return bool(provider_row(tmp_path)[1]) or counts(tmp_path)[1] > 0


def counts(tmp_path: Path) -> tuple[int, int]:
    db = tmp_path / "store.db"
    outbox = query(db, "SELECT count(*) FROM outbox")[0][0]
    dead = query(db, "SELECT count(*) FROM dead_letters")[0][0]
    return outbox, dead


def test_a_proxy_asking_for_credentials_dead_letters_nothing(
    tmp_path: Path, crm: EmulatorServer, proxy_407: str
) -> None:
    daemon = start(tmp_path, crm.base_url, {"HTTP_PROXY": proxy_407})
    try:
        wait_until(lambda: settled(tmp_path), what="the provider's last_error")
        state, error = provider_row(tmp_path)
        assert state == "backing-off"
        assert error is not None and "407" in error and "proxy" in error
        assert counts(tmp_path) == (4, 0)  # every record queued, none dead-lettered
        assert crm.emulator.contacts == {}  # type: ignore[attr-defined]
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        daemon.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALL_PROXY", f"socks5://user:{PROXY_PASSWORD}@127.0.0.1:1080"),
        ("http_proxy", f"ftp://user:{PROXY_PASSWORD}@127.0.0.1:21"),
    ],
)
def test_a_proxy_variable_that_cannot_be_used_pauses_the_provider_not_the_daemon(
    tmp_path: Path, crm: EmulatorServer, variable: str, value: str
) -> None:
    daemon = start(tmp_path, crm.base_url, {variable: value})
    try:
        wait_until(lambda: settled(tmp_path), what="the provider's last_error")
        state, error = provider_row(tmp_path)
        assert state == "auth-failed"
        assert error is not None and variable in error
        assert PROXY_PASSWORD not in error
        wait_until(lambda: counts(tmp_path) == (4, 0), what="the contacts queued")
        assert daemon.process is not None and daemon.process.poll() is None
        assert PROXY_PASSWORD not in daemon.log_path.read_text()
    finally:
        daemon.close()


def test_status_names_the_proxy_that_cannot_be_reached(tmp_path: Path, crm: EmulatorServer) -> None:
    dead = f"http://user:{PROXY_PASSWORD}@127.0.0.1:{free_port()}"
    daemon = start(tmp_path, crm.base_url, {"HTTP_PROXY": dead})
    try:
        wait_until(lambda: settled(tmp_path), what="the provider's last_error")
        state, error = provider_row(tmp_path)
        assert state == "offline"
        assert error is not None and "HTTP_PROXY" in error
        assert f"127.0.0.1:{dead.rsplit(':', 1)[1]}" in error
        assert PROXY_PASSWORD not in error
        assert PROXY_PASSWORD not in daemon.log_path.read_text()
        assert counts(tmp_path) == (4, 0)
    finally:
        daemon.close()


def test_no_proxy_keeps_the_provider_off_the_proxy(
    tmp_path: Path, crm: EmulatorServer, proxy_407: str
) -> None:
    daemon = start(tmp_path, crm.base_url, {"HTTP_PROXY": proxy_407, "NO_PROXY": "127.0.0.1"})
    try:
        wait_until(lambda: len(crm.emulator.contacts) == 4, what="the contacts delivered")  # type: ignore[attr-defined]
        assert counts(tmp_path) == (0, 0)
    finally:
        daemon.close()
