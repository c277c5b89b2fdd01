"""The configuration reference is checked against the code: every key the code reads is
documented, and every documented key is real.

The reference is ``daemon/config_example.toml`` (what ``dropsync init`` writes), shown
whole in ``docs/config.md``. Its example lines (``#key = ...``) are uncommented here and
the result is loaded as a config: a documented key the code does not know is refused
(every table rejects unknown keys). The keys the code asks for while loading it are
recorded, and each must be in the reference.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dropsync.adapters.options import OptionReader
from dropsync.adapters.registrations.adapter import DEFAULT_PATHS
from dropsync.adapters.registry import parse_options
from dropsync.daemon.cli.init import example_config
from dropsync.daemon.config import parse_config
from dropsync.daemon.config_file import Table
from dropsync.daemon.delivery.providers import check_provider_options

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_LINE = re.compile(r"^#(?=[\[a-z])")


def uncommented(text: str) -> str:
    """The reference with its example lines (``#key = ...``, ``#[table]``) made active."""
    return "\n".join(EXAMPLE_LINE.sub("", line) for line in text.splitlines())


def documented_keys(raw: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of a TOML document; collections and providers by their kind."""
    found = set()
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        if prefix in ("collections",):
            key = "collections.*"
        if prefix == "providers":
            key = f"providers.{value['kind']}"
        if isinstance(value, dict) and not (prefix.startswith("providers.") and name == "tables"):
            found |= documented_keys(value, key)
        else:
            found.add(key)
    return found


def test_the_reference_in_the_docs_is_the_example_init_writes() -> None:
    assert f"```toml\n{example_config()}```" in (ROOT / "docs/config.md").read_text()


def test_every_key_is_documented_and_every_documented_key_is_real(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read: set[str] = set()
    kinds: dict[str, str] = {}
    original_get, original_reject = Table.get, OptionReader.reject_unknown

    def table_get(self: Table, name: str) -> Any:
        read.add(_pattern(f"{self.prefix}.{name}" if self.prefix else name, kinds))
        return original_get(self, name)

    monkeypatch.setattr(Table, "get", table_get)
    raw = tomllib.loads(uncommented(example_config()))
    kinds.update({name: table["kind"] for name, table in raw["providers"].items()})
    assert sorted(kinds.values()) == ["churn", "crm", "favourites", "registrations"]
    # brand_id and brand_field are alternatives: the reference shows both, a config has one.
    loadable = {**raw, "providers": {**raw["providers"], "churn": dict(raw["providers"]["churn"])}}
    del loadable["providers"]["churn"]["brand_field"]
    config = parse_config(loadable, "reference")  # a key the code does not know: refused
    check_provider_options(config)
    own: dict[str, set[str]] = {}
    for provider in config.providers.values():
        used: set[str] = set()

        def reject(self: OptionReader, used: set[str] = used) -> None:
            used.update(self.used)
            original_reject(self)

        monkeypatch.setattr(OptionReader, "reject_unknown", reject)
        parse_options(provider.kind, dict(provider.options))
        own[provider.kind] = used

    documented = documented_keys(raw)
    text = example_config()
    # Top-level tables, collections: exactly what the code reads.
    plain_read = {k for k in read if not k.startswith("providers.") and k not in _TABLES}
    plain_read = {k for k in plain_read if not re.fullmatch(r"collections\.[^.*]+", k)}
    plain_documented = {k for k in documented if not k.startswith("providers.")}
    assert plain_read == plain_documented
    # Provider keys: those every kind takes (read by the config loader) ...
    common = {k.split(".", 2)[2] for k in read if k.count(".") >= 2 and k.startswith("providers.")}
    mentioned = {k.rsplit(".", 1)[1] for k in documented if k.startswith("providers.")}
    for name in common - {"secret", "token"}:  # read only to refuse them
        assert name in mentioned or f" {name}" in text, f"{name}: not in the reference"
    # ... and each kind's own keys (read by its adapter's option parser).
    for kind, names in own.items():
        shown = {k.split(".", 2)[2] for k in documented if k.startswith(f"providers.{kind}.")}
        shown = {n.split(".", 1)[0] for n in shown}  # paths.login -> paths
        assert names - common <= shown, f"{kind}: read by the code, missing from the reference"
        assert shown <= names | common, f"{kind}: in the reference, not read by the code"
    paths = {k.rsplit(".", 1)[1] for k in documented if ".paths." in k}
    assert paths == set(DEFAULT_PATHS)


_TABLES = {"store", "drop", "daemon", "listener", "collections", "providers"}


def _pattern(key: str, kinds: dict[str, str]) -> str:
    parts = key.split(".")
    if parts[0] == "collections" and len(parts) > 2:
        return "collections.*." + ".".join(parts[2:])
    if parts[0] == "providers" and len(parts) > 2:
        return f"providers.{kinds.get(parts[1], parts[1])}." + ".".join(parts[2:])
    return key
