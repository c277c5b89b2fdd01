"""Campaign fixtures: the seed (printed, and overridable by ``$DROPSYNC_CAMPAIGN_SEED``)."""

from __future__ import annotations

import pytest

from tests.campaigns.world import SEED_VARIABLE, campaign_seed

# CI runs each campaign with a fixed seed, so a run can be repeated; set the variable to try
# others (the bench scripts draw a fresh one each run and print it).
CI_SEED = 1313


@pytest.fixture(scope="module")
def seed() -> int:
    """This module's campaign seed (printed: pytest shows it beside a failure)."""
    value = campaign_seed(CI_SEED)
    print(f"campaign seed {value} (repeat with {SEED_VARIABLE}={value})")
    return value
