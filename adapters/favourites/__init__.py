"""The event-app favourites (seed 000): its home.

* ``adapter``: the provider (two-way, a token per user, its options);
* ``emulator``: the app on loopback;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import AdapterModule, EmulatorHook, Kind

if TYPE_CHECKING:
    from ..emulators.demo import DemoPart


def _adapter() -> AdapterModule:
    from . import adapter

    return adapter


def _demo() -> DemoPart:
    from .demo import DEMO

    return DEMO


KIND = Kind(
    name="favourites",
    adapter=_adapter,
    emulator=EmulatorHook("favourites", 8082, _demo),
)
