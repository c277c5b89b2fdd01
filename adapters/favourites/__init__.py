"""The event-app favourites (seed 000): its home.

* ``adapter``: the provider (two-way, a token per user, its options);
* ``emulator``: the app on loopback.
"""

from __future__ import annotations

from dropsync.adapters.registry import AdapterModule, Kind


def _adapter() -> AdapterModule:
    from dropsync.adapters.favourites import adapter

    return adapter


KIND = Kind(name="favourites", adapter=_adapter)
