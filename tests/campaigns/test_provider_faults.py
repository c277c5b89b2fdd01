"""Campaign 3: provider faults behind a fault proxy (bench/campaign.py faults: minutes long).

One run per module; each invariant its own test. Two deterministic tests hold the two new
defects the campaign found, each on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaigns import oracle
from tests.campaigns.faults import provider_faults, retry_after_respected
from tests.campaigns.kill import CampaignResult
from tests.campaigns.world import make_world
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(900)]

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
    "retry_after",
    "backoff_cap",
    "coverage",
    "load",
)
PULL_NOT_JSON = (
    "campaign finding: a favourites pull answered 200 with a body that is not JSON (an HTML "
    "page, an empty body) raises JSONDecodeError out of the adapter and ends the daemon "
    "(exit 1): adapters/favourites.py must make it a retryable provider error"
)
PULL_RETRY_AFTER = (
    "campaign finding: the puller ignores Retry-After (it waits pull_interval_s after a 429/503) "
    "and a pull's 401 clears the next-attempt time the flusher stored: daemon/providers.py"
)
KNOWN = {
    # Forced on the CRM's first requests, with keys that are never written again.
    # Not strict while the fix of issue 9 item 1 (5c01271) is being checked against them.
    "delivered": pytest.mark.xfail(
        strict=False, reason="issue 9 item 1: a 200 HTML page or an empty 201 counts as delivered"
    ),
    "daemon_survives": pytest.mark.xfail(strict=False, reason=PULL_NOT_JSON),
    "retry_after": pytest.mark.xfail(strict=False, reason=PULL_RETRY_AFTER),
    # Consequences that show on some runs only (timing):
    "files_once": pytest.mark.xfail(
        strict=False, reason="issue 9 item 11, after the restarts the pull crash forces"
    ),
    "error_logs": pytest.mark.xfail(
        strict=False,
        reason="the pull crash's traceback (raw lines: issue 9 item 19) and issue 9 item 11",
    ),
    "applied_once": pytest.mark.xfail(
        strict=False,
        reason="the re-sent batch finding of campaign 1, after a cut or a timeout that came "
        "after the provider applied, when more entries were queued before the retry",
    ),
}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory, seed: int) -> CampaignResult:
    result = provider_faults(tmp_path_factory.mktemp("faults"), seed, seconds=6, outage_s=2)
    print(f"provider-faults figures: {result.figures}")
    print(oracle.report(result.violations, seed))
    return result


def test_every_fault_was_injected(campaign: CampaignResult) -> None:
    assert campaign.figures["faults_total"] >= 20, campaign.figures


def test_every_violation_belongs_to_a_known_invariant(campaign: CampaignResult) -> None:
    unknown = [v for v in campaign.violations if v.invariant not in INVARIANTS]
    assert not unknown, oracle.report(unknown, campaign.seed)


@pytest.mark.parametrize(
    "invariant", [pytest.param(name, marks=KNOWN.get(name, ())) for name in INVARIANTS]
)
def test_provider_faults_hold(campaign: CampaignResult, invariant: str) -> None:
    found = campaign.of(invariant)
    assert not found, oracle.report(found, campaign.seed)


def _gets(world_proxy: object) -> int:
    return len(world_proxy.seen("GET"))  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=False, reason=PULL_NOT_JSON)
@pytest.mark.parametrize("fault", ["html_200", "empty_2xx"])
def test_a_pull_answered_with_a_body_that_is_not_json_leaves_the_daemon_running(
    tmp_path: Path, fault: str
) -> None:
    world = make_world(tmp_path, 7, proxies=True)
    try:
        proxy = world.proxy("favourites")
        proxy.force(fault)
        world.daemon.start()
        wait_until(lambda: proxy.injected[fault] == 1, what=f"{fault} answered to a pull")
        after = _gets(proxy)
        wait_until(
            lambda: _gets(proxy) > after + 1 or world.daemon.process.poll() is not None,  # type: ignore[union-attr]
            what="the next pulls",
        )
        world.check_alive()
        assert not world.exits
        assert world.stop() == 0
    finally:
        world.close()


@pytest.mark.xfail(strict=False, reason=PULL_RETRY_AFTER)
def test_the_puller_waits_for_retry_after(tmp_path: Path) -> None:
    world = make_world(tmp_path, 7, proxies=True, pull_interval_s=0.2)
    try:
        proxy = world.proxy("favourites")
        proxy.retry_after_s = (2,)
        proxy.force("throttle_delta", "throttle_date")
        world.daemon.start()
        wait_until(lambda: len(proxy.seen("GET")) >= 4, what="four pulls")
        assert world.stop() == 0
        assert retry_after_respected(proxy, "favourites") == []
    finally:
        world.close()
