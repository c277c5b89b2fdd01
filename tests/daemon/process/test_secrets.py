"""Secrets are checked where they are read: what no request could carry is a config error
naming the file, the key and the source, never the value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.errors import ConfigError, SecretError
from dropsync.daemon.process.secrets import check_secrets, load_secret


def config(tmp_path: Path, kind: str, value: str, **extra: object) -> Config:
    secret = tmp_path / "secret"
    secret.write_text(value, encoding="utf-8")
    return parse_config(
        {
            "store": {"path": str(tmp_path / "s.db")},
            "providers": {
                "p": {
                    "kind": kind,
                    "base_url": "http://127.0.0.1:9",
                    "secret_file": str(secret),
                    **extra,
                }
            },
        },
        "test.toml",
    )


CRM = {"account_id": "acc_1"}
REGISTRATIONS = {"username": "bot", "event_id": "ev"}


@pytest.mark.parametrize(
    ("kind", "value", "extra", "problem"),
    [
        ("crm", "tok-first\ntok-second", CRM, "control character"),
        ("crm", "tok-first\x00tok-second", CRM, "control character"),
        ("crm", "tok-é-first", CRM, "non-ASCII"),
        ("crm", "abc", CRM, "shorter than 4"),
        ("favourites", json.dumps({"alice": "tok-first\ntok-second"}), {}, "control character"),
        ("favourites", json.dumps({"alice": " tok-first "}), {}, "whitespace"),
        ("favourites", json.dumps({"alice": ""}), {}, "empty"),
        ("favourites", "tok-first", {}, "JSON object"),
        ("registrations", "pass-first\npass-second", REGISTRATIONS, "control character"),
    ],
)
def test_a_secret_no_request_could_carry_is_refused_without_quoting_it(
    tmp_path: Path, kind: str, value: str, extra: dict[str, object], problem: str
) -> None:
    loaded = config(tmp_path, kind, value, **extra)
    with pytest.raises(ConfigError) as refused:
        check_secrets(loaded)
    message = str(refused.value)
    assert "test.toml: providers.p.secret_file" in message
    assert f"file {tmp_path / 'secret'}" in message and problem in message
    assert "first" not in message and "second" not in message
    with pytest.raises(SecretError):
        load_secret(loaded.providers["p"])


def test_a_password_may_hold_what_a_header_could_not(tmp_path: Path) -> None:
    # The registrations password travels in the login body, not in a header.
    loaded = config(tmp_path, "registrations", "pässwörd with spaces", **REGISTRATIONS)
    check_secrets(loaded)
    _, values = load_secret(loaded.providers["p"])
    assert values == ["pässwörd with spaces"]
