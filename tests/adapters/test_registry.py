"""The Kind contract (adapters/registry.py): every kind's declaration, and a fifth kind
(``tests/adapters/sample_kind``, written by following docs/adding-a-kind.md) plugged into
the config, the listener, the delivery engine and ``dropsync emulate`` without a line of
the daemon changed."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from dropsync.adapters import registry
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.demo import DemoPart
from dropsync.adapters.registry import KINDS, Kind, emulated, every_kind, get_kind
from dropsync.daemon import config as config_module
from dropsync.daemon.cli.app import build_parser
from dropsync.daemon.config import Config, parse_config
from dropsync.daemon.delivery.providers import check_provider_options, confirm_timeouts
from dropsync.daemon.errors import ConfigError
from dropsync.daemon.process.secrets import check_secrets
from dropsync.store.merge import Change

from tests.adapters.sample_kind import KIND as SHOP
from tests.adapters.sample_kind.emulator import ShopEmulator
from tests.churn_support import eventually, merge, running
from tests.support import ROOT, free_port
from tests.test_design_rules import daemon_and_store_files, kind_mentions

CONTRACT = ("parse_options", "build", "secret_values", "SECRET_IN_HEADERS")


@pytest.mark.parametrize("name", KINDS)
def test_each_kind_is_declared_under_its_name_with_its_adapter_module(name: str) -> None:
    kind = get_kind(name)
    assert kind.name == name
    module = kind.adapter()
    assert all(hasattr(module, member) for member in CONTRACT)
    assert isinstance(module.SECRET_IN_HEADERS, bool)
    if kind.request_collections is not None:
        assert all(isinstance(c, str) and c for c in kind.request_collections({}))


def test_inbound_routes_and_emulator_ports_do_not_collide() -> None:
    paths = ["/healthz", "/metrics"]
    for kind in every_kind():
        for route in kind.inbound().routes if kind.inbound is not None else ():
            assert route.path.startswith(("/callbacks/", "/webhooks/")) and route.name
            paths.append(route.path)
    assert len(paths) == len(set(paths))
    ports = [hook.port for _, hook in emulated()]
    assert len(ports) == len(set(ports)) == len(KINDS)


def test_a_kind_s_secret_keys_are_its_own() -> None:
    keys = [key for kind in every_kind() for secret in kind.secrets for key in secret.keys]
    assert len(keys) == len(set(keys))
    common = {"secret_env", "secret_file", "credential", "kind", "base_url"}
    assert not common & set(keys)


def _demo_config(tmp_path: Path, parts: dict[str, DemoPart], urls: dict[str, str]) -> str:
    return (
        f'[store]\npath = "{tmp_path / "s.db"}"\n[drop]\npath = "{tmp_path / "drop"}"\n'
        "[listener]\nport = 1\n\n"
        + "\n".join(part.collections for part in parts.values())
        + "\n"
        + "\n".join(part.provider(urls[name]) for name, part in parts.items())
    )


@pytest.mark.parametrize("name", KINDS)
def test_each_demo_part_loads_as_a_config_and_its_emulator_serves(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = get_kind(name).emulator
    assert hook is not None
    part = hook.part()
    for variable, value in part.environment.items():
        monkeypatch.setenv(variable, value)
    with part.serve(0, "127.0.0.1", None) as server:
        assert server.base_url in part.announce(server)
        assert httpx.get(server.base_url + "/_emulator/state").status_code == 200
        text = _demo_config(tmp_path, {name: part}, {name: server.base_url})
    config = parse_config(tomllib.loads(text), "demo.toml")
    check_provider_options(config)
    check_secrets(config)
    routed = set(config.routes())
    for path in part.samples:
        assert path.split("/")[0] in routed | set(config.collections)


# --- a fifth kind, by the guide ----------------------------------------------------------------


@pytest.fixture
def shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kind]:
    """The sample kind in the registry, as one more line of ``_LOADERS`` would put it."""
    kinds = tuple(sorted((*KINDS, SHOP.name)))
    monkeypatch.setitem(registry._LOADERS, SHOP.name, lambda: SHOP)
    monkeypatch.setattr(registry, "KINDS", kinds)
    monkeypatch.setattr(config_module, "KINDS", kinds)
    yield SHOP


def shop_config(tmp_path: Path, base_url: str, port: int, **provider: Any) -> Config:
    raw: dict[str, Any] = {
        "store": {"path": str(tmp_path / "store.db")},
        "drop": {"path": str(tmp_path / "drop")},
        "listener": {"port": port, "public_url": f"http://127.0.0.1:{port}"},
        "collections": {"orders": {"key": "id", "timestamp": "at", "providers": ["myshop"]}},
        "providers": {
            "myshop": {
                "kind": "shop",
                "base_url": base_url,
                "secret_env": "SHOP_TOKEN",
                "hook_token_env": "SHOP_HOOK_TOKEN",
                "shop_id": "s1",
                "backoff_base_s": 0.05,
                "backoff_cap_s": 0.2,
                **provider,
            }
        },
    }
    return parse_config(raw, "test.toml")


def test_the_daemon_needed_no_change_for_the_fifth_kind() -> None:
    assert all(kind_mentions(path, (SHOP.name,)) == [] for path in daemon_and_store_files())
    assert not (ROOT / "adapters" / SHOP.name).exists()


def test_the_config_takes_the_fifth_kind_s_keys_and_checks_them(
    shop: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "shop-token")
    monkeypatch.setenv("SHOP_HOOK_TOKEN", "hook-token-9a8b7c")
    config = shop_config(tmp_path, "http://127.0.0.1:1", 1)
    assert set(config.providers["myshop"].kind_secrets) == {"hook_token"}
    assert confirm_timeouts(config) == {"myshop": 86_400_000}
    check_provider_options(config)
    check_secrets(config)
    with pytest.raises(ConfigError, match=r"providers\.myshop\.shop_id: missing"):
        check_provider_options(shop_config(tmp_path, "http://x", 1, shop_id=None))
    with pytest.raises(ConfigError, match=r"providers\.myshop\.hook_token_env: the listener"):
        shop_config(tmp_path, "http://x", 1, hook_token_env=None)
    monkeypatch.setenv("SHOP_HOOK_TOKEN", "a token\nwith a line break")
    with pytest.raises(ConfigError, match=r"providers\.myshop\.hook_token_env"):
        check_secrets(config)
    emulate = build_parser("emulate").parse_args(["emulate", "--shop-port", "9"])
    assert emulate.shop_port == 9


@pytest.mark.anyio
async def test_the_fifth_kind_delivers_and_its_webhook_confirms(
    shop: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "shop-token")
    monkeypatch.setenv("SHOP_HOOK_TOKEN", "hook-token-9a8b7c")
    port = free_port()
    with EmulatorServer(ShopEmulator("shop-token")) as server:
        emulator = server.emulator
        assert isinstance(emulator, ShopEmulator)
        config = shop_config(tmp_path, server.base_url, port)
        async with running(config, port) as daemon:
            body = orjson.dumps({"at": 1_700_000_000_000, "id": "o1"}).decode()
            change = Change("orders", "o1", body, 1_700_000_000_000, False, "drop", "d" * 32)
            await merge(daemon.store, config, [change])
            daemon.supervisor.wake(["myshop"])
            await eventually(lambda: emulator.jobs, "the order reached the shop")
            [(job, sent)] = emulator.jobs.items()
            # The listener told the adapter its webhook's URL (Inbound.adapter_options).
            hook = sent["hook"]
            assert hook == f"{daemon.url}/webhooks/shop/hook-token-9a8b7c"
            async with httpx.AsyncClient() as client:
                wrong = await client.post(f"{daemon.url}/webhooks/shop/nope", json={"job": job})
                assert wrong.status_code == 404
                answer = await client.post(hook, json={"job": job, "ok": True})
            assert answer.status_code == 200 and answer.json()["deliveries"] == 1
            rows = await daemon.rows("SELECT provider, state FROM delivered")
            assert rows == [("myshop", "confirmed")]
            [(timeout,)] = await daemon.rows(
                "SELECT confirm_timeout_ms FROM providers WHERE name = 'myshop'"
            )
            assert timeout == 86_400_000
