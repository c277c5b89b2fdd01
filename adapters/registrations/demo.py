"""The registration system's part in ``dropsync emulate`` and ``dropsync demo``
(``adapters.emulators.demo``): an event of 20 participants and a keynote with two seats,
asked for by three."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..emulators.common import EmulatorServer
from ..emulators.demo import DemoPart, Progress
from .emulator import RegistrationsEmulator

DEMO_REGISTRATIONS = {"username": "fp-bot", "password": "demo-lenos-password", "event": "ev-2026"}


def serve(port: int, host: str, listener_url: str | None) -> EmulatorServer:
    """The event-registration emulator with the demo credentials and a small event."""
    emulator = RegistrationsEmulator(
        username=DEMO_REGISTRATIONS["username"],
        password=DEMO_REGISTRATIONS["password"],
        event_id=DEMO_REGISTRATIONS["event"],
    )
    emulator.seed(participants=20, sessions=6)
    emulator.put(
        "sessions",
        [
            {
                "id": "s1",
                "title": "Keynote A",
                "startTime": "2026-06-01T09:00:00Z",
                "in_slot": True,
                "capacity": 2,
            },
            {
                "id": "s2",
                "title": "Keynote B",
                "startTime": "2026-06-01T09:00:00Z",
                "in_slot": True,
                "capacity": 50,
            },
        ],
    )
    emulator.put("locations", [{"id": "l1", "name": "Hall 1"}])
    emulator.put("sessionTags", [{"id": "t1", "name": "Keynote"}])
    return EmulatorServer(emulator, port, host)


def announce(server: EmulatorServer) -> str:
    """Where the emulator is and how to call it."""
    return (
        f"registrations emulator: {server.base_url}  (POST /api/v1/login "
        f"{{username: {DEMO_REGISTRATIONS['username']}, password: "
        f"{DEMO_REGISTRATIONS['password']}}}, event {DEMO_REGISTRATIONS['event']})"
    )


def provider(url: str) -> str:
    """The demo's registrations provider."""
    return f"""[providers.registrations]
kind = "registrations"
base_url = "{url}"
username = "{DEMO_REGISTRATIONS["username"]}"
event_id = "{DEMO_REGISTRATIONS["event"]}"
secret_env = "DROPSYNC_DEMO_REGISTRATIONS_PASSWORD"
concurrent_sessions_title = "Keynotes"
pull_interval_s = 10
backoff_cap_s = 2
"""


def summary(row: Mapping[str, Any], progress: Progress, delivered: str) -> str:
    """The seats it granted and refused, and what was pulled."""
    requests = progress["requests"]
    return (
        f"{requests.get('confirmed', 0)} seat(s) confirmed, "
        f"{requests.get('refused', 0)} refused; participants and sessions pulled"
    )


def progress_line(progress: Progress) -> str | None:
    """The registration requests by status, once there are some."""
    requests = progress["requests"]
    if not requests:
        return None
    return "  registration requests: " + ", ".join(
        f"{count} {status}" for status, count in sorted(requests.items())
    )


DEMO = DemoPart(
    serve=serve,
    announce=announce,
    collections="""[collections.registration_requests]
key = "request"
timestamp = "requested_at"
""",
    provider=provider,
    environment={"DROPSYNC_DEMO_REGISTRATIONS_PASSWORD": DEMO_REGISTRATIONS["password"]},
    samples={
        # Two people ask for seats in a keynote that has two; one more asks for the same
        # keynote and is refused (it is full).
        "registration_requests/seats.json": [
            {
                "request": f"r-{n}",
                "participantId": f"p{n}",
                "sessionId": "s1",
                "action": "register",
                "requested_at": f"2024-05-04T09:0{n}:00Z",
            }
            for n in (1, 2, 3)
        ],
    },
    pulled=("participants",),
    summary=summary,
    progress_line=progress_line,
    queries=("SELECT key, status, reason FROM registration_requests",),
)
