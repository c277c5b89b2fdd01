"""The favourites app's part in ``dropsync emulate`` and ``dropsync demo``
(``adapters.emulators.demo``): two users, one with a favourite to pull back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..emulators.common import EmulatorServer
from ..emulators.demo import DemoPart, Progress
from .emulator import FavouritesEmulator

DEMO_FAVOURITE_TOKENS = {"alice": "demo-token-alice", "bob": "demo-token-bob"}


def serve(port: int, host: str, listener_url: str | None) -> EmulatorServer:
    """The favourites emulator with the demo users' tokens and alice's favourite."""
    favourites = FavouritesEmulator({v: k for k, v in DEMO_FAVOURITE_TOKENS.items()})
    favourites.seed(
        "alice",
        [{"item": "session_21982", "action": "ADD", "actionDate": "2024-05-02T10:45:12.798Z"}],
    )
    return EmulatorServer(favourites, port, host)


def announce(server: EmulatorServer) -> str:
    """Where the emulator is and how to call it."""
    return (
        f"favourites emulator: {server.base_url}  (GET /getUserFavorites, POST "
        f"/postUserFavorites, Bearer {', '.join(DEMO_FAVOURITE_TOKENS.values())})"
    )


def provider(url: str) -> str:
    """The demo's favourites provider."""
    return f"""[providers.favourites]
kind = "favourites"
base_url = "{url}"
secret_env = "DROPSYNC_DEMO_FAVOURITES_TOKENS"
pull_interval_s = 5
backoff_cap_s = 2
"""


def summary(row: Mapping[str, Any], progress: Progress, delivered: str) -> str:
    """What it delivered, and what was pulled back."""
    return delivered + "; favourites pulled back"


DEMO = DemoPart(
    serve=serve,
    announce=announce,
    collections="""[collections.favourites]
providers = ["favourites"]
""",
    provider=provider,
    environment={"DROPSYNC_DEMO_FAVOURITES_TOKENS": orjson.dumps(DEMO_FAVOURITE_TOKENS).decode()},
    samples={
        # Favourites added by two users.
        "favourites/app.json": [
            {
                "user": "bob",
                "item": "session_114582",
                "action": "ADD",
                "actionDate": "2024-05-03T12:15:00.128Z",
            },
            {
                "user": "alice",
                "item": "session_30511",
                "action": "ADD",
                "actionDate": "2024-05-03T12:20:41.002Z",
            },
        ],
    },
    pulled=("favourites",),
    summary=summary,
)
