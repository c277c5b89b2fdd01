"""The event-registration system (seed 002): its home.

* ``adapter``: the provider (stream pulls, 2-way registration requests, its options);
* ``data``: reading its pages and its requests;
* ``emulator``: the system on loopback;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.

Registration requests are the records of its request collection,
``<collection_prefix>registration_requests``; the store's view ``registration_requests``
shows where each stands (a migration: ``store/migrations/0005_registration_requests.sql``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import EmulatorHook, Kind, lazy

REQUESTS = "registration_requests"


def request_collections(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The collection a provider takes registration requests from (its options unchecked:
    a wrong ``collection_prefix`` is refused by the adapter's options)."""
    prefix = options.get("collection_prefix", "")
    return (f"{prefix if isinstance(prefix, str) else ''}{REQUESTS}",)


KIND = Kind(
    name="registrations",
    adapter=lazy(__name__, ".adapter"),
    secret_required="the provider's password",
    request_collections=request_collections,
    emulator=EmulatorHook("registrations", 8083, lazy(__name__, ".demo", "DEMO")),
)
