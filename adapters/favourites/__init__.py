"""The event-app favourites (seed 000): its home.

* ``adapter``: the provider (two-way, a token per user, its options; each user a lane);
* ``tokens``: where the users' tokens come from (the secret, ``tokens_dir``), read again;
* ``emulator``: the app on loopback;
* ``demo``: its part of ``dropsync emulate`` and ``dropsync demo``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import EmulatorHook, Kind, lazy


def _secret_needed(options: Mapping[str, Any]) -> str | None:
    """The users' tokens come from the secret, unless tokens_dir gives them."""
    if options.get("tokens_dir"):
        return None
    return "the users' tokens (a JSON object user -> token), or tokens_dir"


def _sends(options: Mapping[str, Any]) -> bool:
    """A read_only provider is only pulled."""
    return options.get("read_only") is not True


KIND = Kind(
    name="favourites",
    adapter=lazy(__name__, ".adapter"),
    emulator=EmulatorHook("favourites", 8082, lazy(__name__, ".demo", "DEMO")),
    secret_needed=_secret_needed,
    sends=_sends,
    path_options=("tokens_dir",),
)
