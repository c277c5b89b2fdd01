"""``dropsync probe``: each kind's probe request against its emulator over loopback, with a
good and a bad secret, an unreachable port, a base_url that answers 404 and one that
redirects; what it prints (never a secret, even one the provider echoes back) and its exit
code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from dropsync.adapters.churn.emulator import ChurnEmulator
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import Emulator, EmulatorServer
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.registrations.emulator import RegistrationsEmulator
from dropsync.daemon.cli import main
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import free_port

KINDS = ("registrations", "favourites", "crm", "churn")
GOOD = {
    "registrations": "lenos-good-password",
    "favourites": "tok-alice-good-9f1",
    "crm": "crm-good-token-7c2",
    "churn": "churn-good-token-4d8",
}
BAD = {
    "registrations": "lenos-WRONG-password",
    "favourites": "tok-alice-WRONG-9f1",
    "crm": "crm-WRONG-token-7c2",
    "churn": "churn-WRONG-token-4d8",
}
ASKED = {
    "registrations": "POST /api/v1/login",
    "favourites": "GET /getUserFavorites as user alice",
    "crm": "POST /account/acc_1/sync_data (no origin, no contacts)",
    "churn": "GET /client-data/integration-errors",
}
OWN_KEYS = {
    "registrations": 'username = "fp-bot"\nevent_id = "ev-2026"\n',
    "favourites": "",
    "crm": 'account_id = "acc_1"\n',
    "churn": "brand_id = 7\n",
}


def emulator(kind: str) -> Emulator:
    """The kind's emulator, taking the good secret."""
    if kind == "registrations":
        return RegistrationsEmulator(password=GOOD[kind])
    if kind == "favourites":
        return FavouritesEmulator(tokens={GOOD[kind]: "alice"})
    if kind == "crm":
        return CrmEmulator(accounts={"acc_1": GOOD[kind]})
    return ChurnEmulator(token=GOOD[kind])


def secret(kind: str, value: str) -> str:
    """What the provider's secret holds (favourites: a JSON object user -> token)."""
    return orjson.dumps({"alice": value}).decode() if kind == "favourites" else value


class Redirector(Emulator):
    """A server that answers every request with a redirect (a provider that moved)."""

    name = "redirector"

    def routes(self) -> list[Route]:
        """Every path."""
        return [Route("/{path:path}", self.moved, methods=["GET", "POST"])]

    async def moved(self, request: Request) -> Response:
        """301 to another host."""
        return Response(
            status_code=301, headers={"Location": f"https://moved.example{request.url.path}"}
        )


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator(kind)) as running:
        yield running


def write_config(tmp_path: Path, providers: dict[str, tuple[str, str]]) -> Path:
    """A config with ``name -> (kind, base_url)``; each secret in ``PROBE_<NAME>``."""
    text = f'[store]\npath = "{tmp_path / "state/store.db"}"\n'
    for name, (kind, base_url) in providers.items():
        text += (
            f'[providers.{name}]\nkind = "{kind}"\nbase_url = "{base_url}"\n'
            f'secret_env = "PROBE_{name.upper()}"\n{OWN_KEYS[kind]}'
        )
    path = tmp_path / "dropsync.toml"
    path.write_text(text)
    return path


def probe(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    *words: str,
) -> tuple[int, str, str]:
    code = main(["probe", "--config", str(config), *words])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_secret_is_ok_and_nothing_changes_at_the_provider(
    tmp_path: Path,
    kind: str,
    server: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROBE_P", secret(kind, GOOD[kind]))
    config = write_config(tmp_path, {"p": (kind, server.base_url)})
    code, out, err = probe(config, capsys)
    assert (code, out) == (0, f"p: ok ({kind}: {ASKED[kind]})\n"), err
    assert [a.status for a in server.emulator.requests("/") if "_emulator" not in a.path] in (
        [],  # the routes that answer without the common request log
        [200],
        [400],  # crm: the token passed, the empty body was refused
    )
    emulated = server.emulator
    if isinstance(emulated, CrmEmulator):
        assert emulated.contacts == {} and emulated.jobs == []
    if isinstance(emulated, ChurnEmulator):
        assert emulated.uploads == []
    if isinstance(emulated, RegistrationsEmulator):
        assert emulated.logins == 1
    assert not (tmp_path / "state").exists()  # no store was opened, none was made


def test_a_bad_secret_is_refused_and_never_printed_even_when_echoed(
    tmp_path: Path,
    kind: str,
    server: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.emulator.echo_refusals = True  # the refusal quotes the credentials it was sent
    monkeypatch.setenv("PROBE_P", secret(kind, BAD[kind]))
    config = write_config(tmp_path, {"p": (kind, server.base_url)})
    for words in ((), ("--json",)):
        code, out, err = probe(config, capsys, *words)
        assert code == 1
        assert BAD[kind] not in out + err and GOOD[kind] not in out + err
        assert "[redacted]" in out  # the echo arrived, without the secret
        if words:
            [found] = orjson.loads(out)["providers"]
            assert found["state"] == "refused" and "401" in found["detail"]
        else:
            assert out.startswith(f"p: refused ({kind}): ")


def test_a_good_secret_the_provider_echoes_back_is_never_printed(
    tmp_path: Path,
    kind: str,
    server: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulated = server.emulator
    if isinstance(emulated, RegistrationsEmulator):
        emulated.queue_raw(503, b"busy, try later: {body}", route="POST /login")
    elif isinstance(emulated, ChurnEmulator):
        emulated.echo_authorization = True  # 400 "bad request from <Authorization>"
    else:
        emulated.faults.update(status=503, body="busy, try later: {authorization}", count=1)
    monkeypatch.setenv("PROBE_P", secret(kind, GOOD[kind]))
    config = write_config(tmp_path, {"p": (kind, server.base_url)})
    code, out, err = probe(config, capsys)
    assert code == 1
    assert GOOD[kind] not in out + err and "[redacted]" in out
    state = "misconfigured" if kind == "churn" else "unreachable"
    assert out.startswith(f"p: {state} ({kind}): ")


def test_an_unreachable_port_says_why(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_P", secret(kind, GOOD[kind]))
    config = write_config(tmp_path, {"p": (kind, f"http://127.0.0.1:{free_port()}")})
    code, out, err = probe(config, capsys)
    assert code == 1, err
    assert out.startswith(f"p: unreachable ({kind}): ") and "Connection refused" in out


def test_a_provider_that_never_answers_is_unreachable_after_the_timeout(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_P", secret(kind, GOOD[kind]))
    with socket.socket() as silent:  # the kernel accepts connections; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config = write_config(tmp_path, {"p": (kind, f"http://127.0.0.1:{port}")})
        code, out, err = probe(config, capsys, "--timeout", "0.3")
    assert code == 1, err
    assert out == f"p: unreachable ({kind}): no answer within 0.3 s\n"


def test_favourites_without_any_user_token_is_misconfigured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_P", "{}")
    with EmulatorServer(emulator("favourites")) as app:
        config = write_config(tmp_path, {"p": ("favourites", app.base_url)})
        code, out, err = probe(config, capsys)
        assert app.emulator.requests("/getUserFavorites") == []
    assert code == 1, err
    assert out == "p: misconfigured (favourites): no user has a token to ask with\n"


def test_a_base_url_that_answers_404_is_misconfigured(
    tmp_path: Path,
    kind: str,
    server: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROBE_P", secret(kind, GOOD[kind]))
    config = write_config(tmp_path, {"p": (kind, server.base_url + "/no-such-prefix")})
    code, out, err = probe(config, capsys)
    assert code == 1, err
    assert out.startswith(f"p: misconfigured ({kind}): ") and "404" in out


def test_a_redirecting_base_url_is_misconfigured_and_names_the_target(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_P", secret(kind, GOOD[kind]))
    with EmulatorServer(Redirector()) as moved:
        config = write_config(tmp_path, {"p": (kind, moved.base_url)})
        code, out, err = probe(config, capsys)
    assert code == 1, err
    assert out.startswith(f"p: misconfigured ({kind}): ") and "https://moved.example/" in out


def test_every_provider_at_once_one_line_each_exit_1_unless_all_are_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = [EmulatorServer(emulator(k)).start() for k in KINDS]
    try:
        providers = {k[:4]: (k, s.base_url) for k, s in zip(KINDS, servers, strict=True)}
        config = write_config(tmp_path, providers)
        for name, (kind, _) in providers.items():
            monkeypatch.setenv(f"PROBE_{name.upper()}", secret(kind, GOOD[kind]))
        code, out, err = probe(config, capsys)
        assert code == 0, err
        assert out.splitlines() == [f"{k[:4]}: ok ({k}: {ASKED[k]})" for k in KINDS]

        monkeypatch.setenv("PROBE_CRM", BAD["crm"])
        code, out, _ = probe(config, capsys, "--json")
        report = orjson.loads(out)
        assert code == 1 and report["ok"] is False
        assert [(p["provider"], p["state"]) for p in report["providers"]] == [
            ("regi", "ok"),
            ("favo", "ok"),
            ("crm", "refused"),
            ("chur", "ok"),
        ]
        # One provider named: only that one is asked.
        code, out, _ = probe(config, capsys, "chur")
        assert (code, out) == (0, f"chur: ok (churn: {ASKED['churn']})\n")
        code, out, _ = probe(config, capsys, "crm")
        assert code == 1 and out.startswith("crm: refused")
    finally:
        for running in servers:
            running.stop()


def test_usage_and_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, {"crm": ("crm", "http://127.0.0.1:9")})
    monkeypatch.delenv("PROBE_CRM", raising=False)
    code, out, err = probe(config, capsys)
    assert code == 2 and "providers.crm.secret_env" in err and out == ""
    monkeypatch.setenv("PROBE_CRM", GOOD["crm"])
    code, out, err = probe(config, capsys, "nope")
    assert code == 2 and "unknown provider 'nope'; configured: crm" in err
    with pytest.raises(SystemExit) as exited:
        main(["probe", "--config", str(config), "--timeout", "0"])
    assert exited.value.code == 2


def test_a_proxy_variable_that_cannot_be_used_is_misconfigured_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_P", secret("crm", GOOD["crm"]))
    monkeypatch.setenv("ALL_PROXY", "socks5://user:proxy-pass-31f@127.0.0.1:1080")
    config = write_config(tmp_path, {"p": ("crm", f"http://127.0.0.1:{free_port()}")})
    code, out, err = probe(config, capsys)
    assert code == 1, err
    assert out.startswith("p: misconfigured (crm): ALL_PROXY: ")
    assert "proxy-pass-31f" not in out + err
