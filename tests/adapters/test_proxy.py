"""The environment's proxy variables as the adapters' clients read them: which proxy a
request goes through (said in its errors, without the proxy's password), a proxy that asks
for credentials of its own (never a dead letter), and a variable httpx cannot use (an
``OptionError`` naming it, never httpx's exception)."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator

import pytest
from dropsync.adapters.base import OutgoingChange
from dropsync.adapters.crm.adapter import CrmProvider
from dropsync.adapters.crm.adapter import parse_options as crm_options
from dropsync.adapters.errors import ProviderMisconfigured, ProviderUnavailable, RetryableError
from dropsync.adapters.http import fetch, make_client
from dropsync.adapters.options import OptionError
from dropsync.adapters.proxy import proxy_problem, proxy_variables, shown, through

from tests.support import free_port

PASSWORD = "pr0xy-pass-77e1"
CONTACT = OutgoingChange(1, "contacts", "a@example.com", 1, False, {"email": "a@example.com"}, "k")
VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.upper(), raising=False)


class _Refuses(http.server.BaseHTTPRequestHandler):
    """A proxy that answers every request (a CONNECT too) 407."""

    def _answer(self) -> None:
        self.send_response(407, "Proxy Authentication Required")
        self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_CONNECT = _answer  # noqa: N815 (http.server names them so)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy_407() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_lower_case_variable_wins_and_an_empty_one_unsets_its_twin() -> None:
    environ = {"HTTP_PROXY": "http://a:1", "http_proxy": "http://b:2", "HTTPS_PROXY": "c:3"}
    assert proxy_variables(environ) == {
        "http": ("http_proxy", "http://b:2"),
        "https": ("HTTPS_PROXY", "c:3"),
    }
    assert proxy_variables({"HTTP_PROXY": "http://a:1", "http_proxy": ""}) == {}


def test_a_proxy_is_shown_without_its_user_and_password() -> None:
    assert shown(f"http://user:{PASSWORD}@proxy.corp:3128/") == "http://proxy.corp:3128"
    assert shown(f"bob:{PASSWORD}@proxy.corp:3128") == "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("url", "no_proxy", "proxied"),
    [
        ("https://api.example.com/x", "", True),
        ("https://api.example.com/x", "*", False),
        ("https://api.example.com/x", "example.com", False),
        ("https://api.example.com/x", ".example.com", False),
        ("https://example.com/x", ".example.com", True),
        ("https://api.example.com/x", "other.org, api.example.com", False),
        ("http://127.0.0.1:8080/x", "127.0.0.1", False),
        ("http://[::1]:8080/x", "::1", False),
        ("http://10.0.0.12/x", "10.0.0.1", True),
    ],
)
def test_through_names_the_proxy_as_httpx_chooses_it(
    monkeypatch: pytest.MonkeyPatch, url: str, no_proxy: str, proxied: bool
) -> None:
    monkeypatch.setenv("ALL_PROXY", f"http://u:{PASSWORD}@proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    said = through(url)
    if proxied:
        assert said == "the proxy http://proxy.corp:3128 (ALL_PROXY)"
    else:
        assert said is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALL_PROXY", f"socks5://u:{PASSWORD}@127.0.0.1:1080"),
        ("https_proxy", f"ftp://u:{PASSWORD}@127.0.0.1:21"),
    ],
)
def test_a_variable_httpx_cannot_use_is_an_option_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    problem = proxy_problem()
    assert problem is not None and problem[0] == variable
    with pytest.raises(OptionError) as raised:
        make_client("http://127.0.0.1:9")
    assert raised.value.key == variable
    assert PASSWORD not in str(raised.value)


@pytest.mark.anyio
async def test_a_proxy_that_cannot_be_reached_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://u:{PASSWORD}@127.0.0.1:{free_port()}")
    async with make_client("http://provider.invalid") as client:
        with pytest.raises(ProviderUnavailable) as raised:
            await fetch(client, "GET", "/x", timeout_s=10)
    assert "(through the proxy http://127.0.0.1:" in str(raised.value)
    assert "(HTTP_PROXY)" in str(raised.value)
    assert PASSWORD not in str(raised.value)


@pytest.mark.anyio
async def test_a_proxy_refusing_to_connect_with_407_is_a_misconfiguration(
    monkeypatch: pytest.MonkeyPatch, proxy_407: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://{proxy_407}")
    async with make_client(f"https://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ProviderMisconfigured) as raised:
            await fetch(client, "POST", "/x", timeout_s=10, content=b"{}")
    assert raised.value.status == 407
    assert f"the proxy http://{proxy_407} (HTTPS_PROXY)" in str(raised.value)


class _Echoes(http.server.BaseHTTPRequestHandler):
    """A proxy whose error page quotes the request's headers (its Proxy-Authorization too)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = f"<pre>bad gateway\n{self.headers}</pre>".encode()
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.anyio
async def test_the_proxy_s_credentials_echoed_back_never_leave_the_adapter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echoes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "HTTP_PROXY", f"http://corp-user:{PASSWORD}@127.0.0.1:{server.server_port}"
        )
        provider = CrmProvider(
            "crm",
            f"http://127.0.0.1:{free_port()}",
            crm_options({"account_id": "acc_1"}),
            "crm-token-0c1d2e3f",
            5,
            None,
        )
        async with provider:
            with pytest.raises(RetryableError) as raised:
                await provider.push([CONTACT], idempotency_key="k")
    finally:
        server.shutdown()
        server.server_close()
    said = str(raised.value)
    assert "HTTP 502" in said and "Proxy-Authorization" in said  # the page was quoted
    basic = base64.b64encode(f"corp-user:{PASSWORD}".encode()).decode()
    assert basic not in said and PASSWORD not in said
