"""Names and places from the config that become paths: provider and collection names are a
safe set, and the store, its companions and its spool are never inside the drop folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.places import toml_key


def write(tmp_path: Path, body: str, *, store: str = "s.db", drop: str = "drop") -> Path:
    path = tmp_path / "dropsync.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / store}"\n[drop]\npath = "{tmp_path / drop}"\n' + body
    )
    return path


def check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", "--config", str(config)])
    return code, capsys.readouterr().err


def provider(name: str) -> str:
    return f'[providers.{json.dumps(name)}]\nkind = "crm"\nbase_url = "http://127.0.0.1:1"\n'


@pytest.mark.parametrize(
    "name",
    ["..", ".", "churn/eu", "a\\b", "", ".hidden", "-x", "a b", "crm\u0000", "é", "x" * 65],
)
def test_a_provider_name_outside_the_safe_set_is_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, err = check(write(tmp_path, provider(name)), capsys)
    assert code == 2
    assert f"providers.{toml_key(name)}: " in err and "A-Z" in err


@pytest.mark.parametrize("name", ["crm", "churn-eu", "crm_2", "crm.v2", "X" * 64, "9"])
def test_a_provider_name_in_the_safe_set_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    body = provider(name) + 'account_id = "a"\nsecret_env = "HOME"\n'
    code, err = check(write(tmp_path, body), capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    "name", ["..", ".", "a/b", "", ".done", "a\u0000b", "tab\there", "del\u007f", "é" * 128]
)
def test_a_collection_name_that_is_no_plain_folder_name_is_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, err = check(write(tmp_path, f"[collections.{json.dumps(name)}]\n"), capsys)
    assert code == 2
    assert f"collections.{toml_key(name)}: " in err and "folder name" in err


@pytest.mark.parametrize("name", ["contacts", "café", "ev2026_registration_requests", "é" * 127])
def test_a_collection_name_that_is_a_plain_folder_name_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, err = check(write(tmp_path, f"[collections.{json.dumps(name)}]\n"), capsys)
    assert (code, err) == (0, "")


def test_a_store_name_with_no_room_for_the_names_made_from_it_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(write(tmp_path, "", store="s" * 198 + ".db"), capsys)
    assert code == 2 and "store.path: the store's file name is longer than 200 bytes" in err
    code, err = check(write(tmp_path, "", store="s" * 197 + ".db"), capsys)
    assert (code, err) == (0, "")


CRM = '[providers.c]\nkind = "crm"\nbase_url = "http://127.0.0.1:9"\naccount_id = "a"\n'
FAVOURITES = '[providers.f]\nkind = "favourites"\nbase_url = "http://127.0.0.1:9"\n'
CHURN = (
    '[providers.u]\nkind = "churn"\nbase_url = "http://127.0.0.1:9"\nsecret_env = "HOME"\n'
    "brand_id = 1\n"
)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (CRM + 'secret_file = "{drop}/keys/crm.token"\n', "providers.c.secret_file"),
        (FAVOURITES + 'tokens_dir = "{drop}/tokens"\n', "providers.f.tokens_dir"),
        (FAVOURITES + 'tokens_dir = "{drop}"\n', "providers.f.tokens_dir"),
        (CHURN + 'callback_secret_file = "{drop}/u/hook"\n', "providers.u.callback_secret_file"),
        (CRM + 'secret_file = "{tmp}/link/keys/crm.token"\n', "providers.c.secret_file"),
    ],
)
def test_a_file_a_provider_reads_inside_the_drop_folder_is_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, key: str
) -> None:
    # The daemon takes every file there for a dropped one: it moved its own secret into
    # .quarantine/, and the provider lost its credentials at the next reload or start.
    for secret in ("keys/crm.token", "u/hook"):
        (tmp_path / "drop" / secret).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "drop" / secret).write_text("s3cret\n")
    (tmp_path / "link").symlink_to(tmp_path / "drop")
    config = write(tmp_path, body.format(drop=tmp_path / "drop", tmp=tmp_path))
    code, err = check(config, capsys)
    assert code == 2 and f"{key}: " in err and "inside the drop folder" in err, err


def test_a_file_a_provider_reads_beside_the_drop_folder_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/crm.token").write_text("s3cret\n")
    body = CRM + f'secret_file = "{tmp_path}/keys/crm.token"\n'
    body += FAVOURITES + f'tokens_dir = "{tmp_path}/drop-tokens"\n'
    code, err = check(write(tmp_path, body), capsys)
    assert (code, err) == (0, "")
