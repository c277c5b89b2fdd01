"""The CRM's part in ``dropsync emulate`` and ``dropsync demo`` (``adapters.emulators.demo``).

Hotel guests, one with a purchase; on a terminal the demo's offline step takes the CRM away
while three more guests arrive.
"""

from __future__ import annotations

from typing import Any

from ..emulators.common import EmulatorServer
from ..emulators.demo import DemoPart, OfflineStep
from .emulator import CrmEmulator

DEMO_ACCOUNT = "acc_1"
DEMO_CRM_TOKEN = "demo-crm-token"
DEMO_CRM_WEBHOOK_TOKEN = "demo-crm-webhook-token-5f1e"


def serve(port: int, host: str, listener_url: str | None) -> EmulatorServer:
    """The CRM emulator with the demo account (its webhook URL comes with each sync)."""
    return EmulatorServer(CrmEmulator({DEMO_ACCOUNT: DEMO_CRM_TOKEN}), port, host)


def announce(server: EmulatorServer) -> str:
    """Where the emulator is and how to call it."""
    return (
        f"CRM emulator:        {server.base_url}  (POST /account/{DEMO_ACCOUNT}/sync_data, "
        f"Authorization: Token token={DEMO_CRM_TOKEN})"
    )


def provider(url: str) -> str:
    """The demo's CRM provider."""
    return f"""[providers.crm]
kind = "crm"
base_url = "{url}"
account_id = "{DEMO_ACCOUNT}"
secret_env = "DROPSYNC_DEMO_CRM_TOKEN"
webhook_token_env = "DROPSYNC_DEMO_CRM_WEBHOOK_TOKEN"
origin = "dropsync-demo"
backoff_base_s = 0.5
backoff_cap_s = 2
"""


def _guest(email: str, first: str, last: str, at: str, **extra: object) -> dict[str, Any]:
    return {"email": email, "name_first": first, "name_last": last, "updated_at": at, **extra}


DEMO = DemoPart(
    serve=serve,
    announce=announce,
    collections="""[collections.contacts]
key = "email"
timestamp = "updated_at"
providers = ["crm"]
""",
    provider=provider,
    environment={
        "DROPSYNC_DEMO_CRM_TOKEN": DEMO_CRM_TOKEN,
        "DROPSYNC_DEMO_CRM_WEBHOOK_TOKEN": DEMO_CRM_WEBHOOK_TOKEN,
    },
    samples={
        # Guests with, for one, a purchase.
        "contacts/guests.json": [
            _guest("ann@example.com", "Ann", "Lee", "2024-05-02T10:45:12.798Z"),
            _guest(
                "bob@example.com",
                "Bob",
                "Ray",
                "2024-05-03T08:00:00Z",
                purchase={
                    "transaction_code": "T-1001",
                    "price": 340,
                    "currency": "USD",
                    "product_uuid": "room-deluxe",
                    "status": "check_in",
                },
            ),
            _guest("chloe@example.com", "Chloé", "Martin", "2024-05-03T09:30:00Z"),
        ],
    },
    offline=OfflineStep(
        late={
            "contacts/late-arrivals.json": [
                _guest("dora@example.com", "Dora", "Quinn", "2024-05-04T18:00:00Z"),
                _guest("emil@example.com", "Emil", "Nowak", "2024-05-04T18:05:00Z"),
                _guest("fay@example.com", "Fay", "Okafor", "2024-05-04T18:10:00Z"),
            ]
        },
        take_offline="Press Enter to take the CRM offline and drop three more guests "
        "(Ctrl-C stops the demo).",
        offline="The CRM is offline: its outbox holds the new guests (pending above). "
        "Press Enter to bring it back.",
        back="The CRM is back: watch its outbox drain.",
        done="The CRM has every guest again: nothing was lost while it was away. "
        "Ctrl-C stops the demo (its store stays for you to query).",
    ),
)
