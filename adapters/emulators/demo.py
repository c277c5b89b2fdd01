"""A kind's part in ``dropsync emulate`` and ``dropsync demo``: its emulator and its sample data.

A kind with an emulator names it in ``Kind.emulator`` (``adapters.registry.EmulatorHook``:
a title and a default port, read without loading any emulator) and its module's ``DEMO``
is a ``DemoPart``. ``dropsync emulate`` starts each kind's emulator with the demo
credentials and prints its ``announce`` line; ``dropsync demo`` also writes each part's
collections and provider into its config file (a provider named after its kind), sets the
part's environment (the secrets), drops its samples once the daemon runs, and says what
arrived (``daemon.demo``, ``daemon.demo_view``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .common import EmulatorServer

Samples = Mapping[str, Sequence[Mapping[str, Any]]]
"""Drop files: a path under the drop folder (``<collection>/<name>.json|.ndjson``) -> its
documents."""

Progress = Mapping[str, Any]
"""What the demo shows as it runs (``store.queries.progress_summary``)."""


@dataclass(frozen=True, slots=True)
class OfflineStep:
    """The demo's step on a terminal: this kind's emulator goes away while ``late`` is
    dropped (its outbox holds the records), then comes back (the outbox drains)."""

    late: Samples
    take_offline: str  # the prompt: Enter takes it offline
    offline: str  # while it is away: Enter brings it back
    back: str  # once it is back, while its outbox drains
    done: str  # its outbox is empty again


@dataclass(frozen=True, slots=True)
class DemoPart:
    """A kind's emulator with the demo's credentials, and its part of the demo."""

    # The emulator (not started) on ``port`` (0: a free one) and ``host``; the listener's
    # URL when the daemon listens (a kind that calls back appends its own paths).
    serve: Callable[[int, str, str | None], EmulatorServer]
    # What ``dropsync emulate`` prints of it: where it is, how to call it (demo credentials).
    announce: Callable[[EmulatorServer], str]
    # The demo config's TOML: its collections, and its ``[providers.<kind>]`` given the
    # emulator's URL (secrets by environment variable, never in the file).
    collections: str
    provider: Callable[[str], str]
    environment: Mapping[str, str]  # those variables, with the demo's secrets
    samples: Samples  # dropped once the daemon runs
    pulled: tuple[str, ...] = ()  # collections its pulls fill: the demo waits for them
    # The summary's words on what the provider did, given its row of the progress, the
    # progress, and the words every provider gets.
    summary: Callable[[Mapping[str, Any], Progress, str], str] | None = None
    progress_line: Callable[[Progress], str | None] | None = None  # a line of the live block
    queries: tuple[str, ...] = ()  # SQL the summary suggests trying on the store
    offline: OfflineStep | None = None
