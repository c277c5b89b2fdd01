"""Campaign 1: SIGKILL anywhere under a steady mixed load, 20 kills (bench/campaign_kill.py: 200).

One run of the campaign per module; each invariant of the oracle is its own test, so a known
open defect marks exactly the invariant it breaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import oracle
from tests.harness.kill import CampaignResult, kill_anywhere
from tests.harness.world import make_world
from tests.support import query, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(900)]

KILLS = 20
INVARIANTS = (
    "integrity",
    "durable",
    "winners",
    "files_once",
    "ledger_counts",
    "inbox_outcomes",
    "delivered",
    "applied_once",
    "request_outcomes",
    "pulled",
    "callbacks",
    "liveness",
    "daemon_survives",
    "error_logs",
    "load",
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory, seed: int) -> CampaignResult:
    result = kill_anywhere(tmp_path_factory.mktemp("kill-anywhere"), seed, KILLS)
    print(f"kill-anywhere figures: {result.figures}")
    print(oracle.report(result.violations, seed))
    return result


def test_the_campaign_ran_at_size(campaign: CampaignResult) -> None:
    figures = campaign.figures
    assert figures["kills"] == KILLS
    # Every fourth kill at the worst moment, hit for real (each waits for it to happen).
    assert figures["kills_after_apply"] == KILLS // 4, figures
    assert figures["files"] > 50 and figures["inbox_rows"] > 100, figures
    assert figures["crm_requests"] > 0 and figures["favourites_requests"] > 0, figures
    assert figures["registration_requests"] > 10 and figures["participant_changes"] > 5, figures
    assert figures["churn_uploads"] > 0 and figures["callbacks_taken"] > 0, figures


def test_every_violation_belongs_to_a_known_invariant(campaign: CampaignResult) -> None:
    unknown = [v for v in campaign.violations if v.invariant not in INVARIANTS]
    assert not unknown, oracle.report(unknown, campaign.seed)


@pytest.mark.parametrize("invariant", INVARIANTS)
def test_kill_anywhere_holds(campaign: CampaignResult, invariant: str) -> None:
    found = campaign.of(invariant)
    assert not found, oracle.report(found, campaign.seed)


def test_a_batch_applied_just_before_a_kill_is_not_applied_again(tmp_path: Path) -> None:
    """The held-answer kill, alone and deterministic: 3 contacts applied, daemon killed before
    recording; 2 more queued while it is down; after the restart each version is applied once."""
    world = make_world(tmp_path, 5, proxies=True)
    try:
        world.daemon.start()
        proxy = world.proxy("crm")
        proxy.hold_after_apply("/account")
        first = world.load.drop_file("contacts", count=3, bad=False)
        assert proxy.held.wait(60), "the CRM was never sent the first contacts"
        world.kill()
        proxy.release()
        second = world.load.drop_file("contacts", count=2, bad=False)
        # The provider fails every request until the new contacts are queued too, so the first
        # attempt after the restart cannot be the held batch alone.
        proxy.set_plan({"error_5xx": 1.0})
        world.daemon.start()
        wait_until(
            lambda: query(world.store, "SELECT COUNT(*) FROM outbox")[0][0] == 5,
            what="both files' contacts queued",
        )
        proxy.set_plan({})
        assert world.settle(60) is None
        assert world.stop() == 0
        with world.crm_emulator.lock:
            applied = dict(world.crm_emulator.applied)
        live = [d for d in first.docs + second.docs if d is not None and not d.deleted]
        assert len(applied) == len(live), applied
        assert all(times == 1 for times in applied.values()), applied
    finally:
        world.close()
