"""Campaign fixtures: the seed (printed, and overridable by ``$DROPSYNC_CAMPAIGN_SEED``).

A campaign's world is module-scoped (it runs once, and its tests read what it found): when
the tests run on several workers, a module goes to one worker whole (``--dist loadfile``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.world import SEED_VARIABLE, campaign_seed

# CI runs each campaign with a fixed seed, so a run can be repeated; set the variable to try
# others (the bench scripts draw a fresh one each run and print it).
CI_SEED = 1313


@pytest.fixture(scope="module")
def seed() -> int:
    """This module's campaign seed (printed: pytest shows it beside a failure)."""
    value = campaign_seed(CI_SEED)
    print(f"campaign seed {value} (repeat with {SEED_VARIABLE}={value})")
    return value


@pytest.fixture(scope="module", autouse=True)
def _daemons_not_measured() -> Iterator[None]:
    """The campaigns' daemons run without coverage measurement.

    A campaign counts kills that land in timed windows (a push held after the provider
    applied it); a measured daemon is slower and changes what the campaign exercises.
    Their code paths are measured through the other end-to-end tests.
    """
    saved = os.environ.pop("COVERAGE_PROCESS_CONFIG", None)
    yield
    if saved is not None:
        os.environ["COVERAGE_PROCESS_CONFIG"] = saved
