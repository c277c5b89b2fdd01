"""Campaign fixtures: the seed (printed, and overridable by ``$DROPSYNC_CAMPAIGN_SEED``); the
campaigns run one after another on one worker when the tests run on several (xdist)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.world import SEED_VARIABLE, campaign_seed


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every campaign in one xdist group: each module's campaign runs once (module-scoped
    fixtures), and no two campaigns run at once, so each keeps the timing it was tuned for
    (kills that land in timed windows) whatever the number of workers."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("campaigns"))


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
