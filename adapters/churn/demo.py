"""The churn tool's part in ``dropsync emulate`` and ``dropsync demo``
(``adapters.emulators.demo``): the client's users, in the tool's envelope, uploaded as a file
and confirmed by the tool's signed sync-status callback."""

from __future__ import annotations

from ..emulators.common import EmulatorServer
from ..emulators.demo import DemoPart
from .emulator import ChurnEmulator

DEMO_CHURN = {"token": "demo-churn-token", "callback_secret": "demo-churn-callback-secret"}


def serve(port: int, host: str, listener_url: str | None) -> EmulatorServer:
    """The churn tool emulator with the demo credentials; it calls the listener back."""
    emulator = ChurnEmulator(
        DEMO_CHURN["token"],
        DEMO_CHURN["callback_secret"],
        callback_base=None if listener_url is None else f"{listener_url}/callbacks/churn",
        callback_delay_s=0.5,
    )
    return EmulatorServer(emulator, port, host)


def announce(server: EmulatorServer) -> str:
    """Where the emulator is and how to call it."""
    return (
        f"churn emulator:      {server.base_url}  (POST /client-files, Authorization: "
        f"Bearer {DEMO_CHURN['token']}; callbacks signed with {DEMO_CHURN['callback_secret']})"
    )


def provider(url: str) -> str:
    """The demo's churn provider."""
    return f"""[providers.churn]
kind = "churn"
base_url = "{url}"
secret_env = "DROPSYNC_DEMO_CHURN_TOKEN"
callback_secret_env = "DROPSYNC_DEMO_CHURN_CALLBACK_SECRET"
tables = {{ users = "user" }}
brand_id = 15
backoff_cap_s = 2
"""


def _user(user_id: int, email: str, city: str, brand: int, at: int) -> dict[str, object]:
    return {
        "data": {"id": user_id, "email": email, "city": city, "brand": brand},
        "createdAt": at - 86_400_000,
        "updatedAt": at,
    }


DEMO = DemoPart(
    serve=serve,
    announce=announce,
    collections="""[collections.users]
key = "data.id"
timestamp = "updatedAt"
providers = ["churn"]
""",
    provider=provider,
    environment={
        "DROPSYNC_DEMO_CHURN_TOKEN": DEMO_CHURN["token"],
        "DROPSYNC_DEMO_CHURN_CALLBACK_SECRET": DEMO_CHURN["callback_secret"],
    },
    samples={
        # The client's users, in the churn envelope, of one brand.
        "users/users.ndjson": [
            _user(123, "john@doe.com", "Limassol", 7, 1696821819000),
            _user(124, "maria@example.com", "Nicosia", 7, 1696821820000),
            _user(125, "yusuf@example.com", "Paphos", 7, 1696821821000),
        ],
    },
)
