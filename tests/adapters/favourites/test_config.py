"""Favourites in the config (issue 21, part 1): a collection routed to a read_only provider is
refused, tokens may come from tokens_dir alone, and a relative tokens_dir is a config path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.config import load_config
from dropsync.daemon.delivery.providers import check_provider_options, provider_options
from dropsync.daemon.errors import ConfigError


def write_config(tmp_path: Path, provider: str, route: bool = True) -> Path:
    path = tmp_path / "dropsync.toml"
    routed = '[collections.favourites]\nproviders = ["fav"]\n' if route else ""
    path.write_text(
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        f'{routed}[providers.fav]\nkind = "favourites"\nbase_url = "http://127.0.0.1:9"\n'
        + provider
    )
    return path


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    secret = tmp_path / "tokens.json"
    secret.write_text(json.dumps({"alice": "tok-alice-1"}))
    return secret


def test_a_collection_routed_to_a_read_only_provider_is_a_config_error(
    tmp_path: Path, tokens: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f'secret_file = "{tokens}"\nread_only = true\n')
    for command in (["check-config"], ["run"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert str(config) in err and "collections.favourites.providers" in err
        assert "'favourites'" in err and "'fav'" in err and "read_only" in err
    # Not routed there, a read-only provider is fine: it is pulled.
    config = write_config(tmp_path, f'secret_file = "{tokens}"\nread_only = true\n', route=False)
    assert main(["check-config", "--config", str(config)]) == 0


def test_tokens_may_come_from_tokens_dir_alone_but_from_somewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "providers.fav.secret_env" in err and "tokens_dir" in err
    config = write_config(tmp_path, 'tokens_dir = "tokens"\n')
    assert main(["check-config", "--config", str(config)]) == 0


def test_a_relative_tokens_dir_is_under_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    config = load_config(str(write_config(tmp_path, 'tokens_dir = "tokens"\n')))
    check_provider_options(config)
    assert provider_options(config.providers["fav"])["tokens_dir"] == str(
        tmp_path / "state" / "tokens"
    )
    bad = load_config(str(write_config(tmp_path, 'tokens_dir = "t"\nauth_header = "A B"\n')))
    with pytest.raises(ConfigError, match=r"providers\.fav\.auth_header"):
        check_provider_options(bad)


def test_a_secret_file_that_is_not_utf8_is_a_config_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "tokens.json"
    secret.write_bytes(b'\xff\xfe{"alice": "tok-alice-1"}')
    config = write_config(tmp_path, f'secret_file = "{secret}"\n')
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "providers.fav.secret_file" in err and str(secret) in err and "UTF-8" in err
    assert "Traceback" not in err and "UnicodeDecodeError" not in err
