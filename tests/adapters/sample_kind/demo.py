"""The shop's part in ``dropsync emulate`` and ``dropsync demo``."""

from __future__ import annotations

from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.emulators.demo import DemoPart

from tests.adapters.sample_kind.emulator import ShopEmulator

TOKEN = "demo-shop-token"
HOOK_TOKEN = "demo-shop-hook-token-1f2e"


def serve(port: int, host: str, listener_url: str | None) -> EmulatorServer:
    """The shop with the demo token."""
    return EmulatorServer(ShopEmulator(TOKEN), port, host)


def announce(server: EmulatorServer) -> str:
    """Where it is, how to call it."""
    return f"shop emulator:       {server.base_url}  (POST /shops/s1/orders, Bearer {TOKEN})"


def provider(url: str) -> str:
    """The demo's shop provider."""
    return f"""[providers.shop]
kind = "shop"
base_url = "{url}"
shop_id = "s1"
secret_env = "DROPSYNC_DEMO_SHOP_TOKEN"
hook_token_env = "DROPSYNC_DEMO_SHOP_HOOK_TOKEN"
"""


DEMO = DemoPart(
    serve=serve,
    announce=announce,
    collections="""[collections.orders]
key = "id"
timestamp = "at"
providers = ["shop"]
""",
    provider=provider,
    environment={"DROPSYNC_DEMO_SHOP_TOKEN": TOKEN, "DROPSYNC_DEMO_SHOP_HOOK_TOKEN": HOOK_TOKEN},
    samples={"orders/today.json": [{"id": "o1", "at": 1_700_000_000_000, "total": 12}]},
)
