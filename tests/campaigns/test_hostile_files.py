"""Campaign 4: 47 hostile drop files made here, each followed by a good file, then a swarm of
small files at once (bench/campaign.py hostile: 20,000 files and an object of 10^6 keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaigns import oracle
from tests.campaigns.hostile import Case, cases, hostile_files
from tests.campaigns.kill import CampaignResult

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(900)]

AFTER_NON_UTF8 = (
    "the daemon ended by the file name that is not UTF-8 (the case before) restarts into it"
)
KNOWN = {
    # While the non-UTF-8 name below ends the daemon, the cases run after it may fail too.
    "a file deleted while read": pytest.mark.xfail(strict=False, reason=AFTER_NON_UTF8),
    "its collection folder removed while read": pytest.mark.xfail(
        strict=False, reason=AFTER_NON_UTF8
    ),
    "the same name again": pytest.mark.xfail(strict=False, reason=AFTER_NON_UTF8),
    "a name with non-UTF-8 bytes": pytest.mark.xfail(
        strict=True,
        reason="campaign finding: a file name that is not UTF-8 makes watchfiles raise "
        "WatchfilesRustInternalError ('Unable to decode path') out of the watcher: the daemon "
        "exits 1, and again on every start while the file is there (daemon/watcher.py)",
    ),
    "a file that grows while read": pytest.mark.xfail(
        strict=False,
        reason="campaign finding: a file still written to (through a handle opened before the "
        "rename) after it was claimed: its ingest stalled with the ledger row 'processing' "
        "(seen on the runs tried; daemon/ingest.py, daemon/parse.py)",
    ),
}
CI_CASES = 47


@pytest.fixture(scope="module")
def campaign(
    tmp_path_factory: pytest.TempPathFactory, seed: int
) -> tuple[CampaignResult, dict[str, Case]]:
    result, cases = hostile_files(
        tmp_path_factory.mktemp("hostile"),
        seed,
        many_files=100,
        many_keys=50_000,
        case_timeout=6,
    )
    print(f"hostile-files figures: {result.figures}")
    print(oracle.report(result.violations, seed))
    return result, {case.name: case for case in cases}


def test_at_least_40_hostile_files_were_tried(
    campaign: tuple[CampaignResult, dict[str, Case]],
) -> None:
    assert len(campaign[1]) == CI_CASES >= 40


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(case.name, marks=KNOWN.get(case.name, ()))
        for case in cases(Path("/nonexistent"), 1)
    ],
)
def test_hostile_file_is_handled(
    campaign: tuple[CampaignResult, dict[str, Case]], name: str
) -> None:
    case = campaign[1][name]
    assert not case.problems, f"seed {campaign[0].seed}: {name}: {case.problems}"


def test_the_daemon_stays_within_its_memory_target(
    campaign: tuple[CampaignResult, dict[str, Case]],
) -> None:
    found = campaign[0].of("memory")
    assert not found, oracle.report(found, campaign[0].seed)


@pytest.mark.parametrize(
    "invariant",
    [
        pytest.param("liveness", marks=pytest.mark.xfail(strict=False, reason=AFTER_NON_UTF8)),
        pytest.param(
            "daemon_survives", marks=pytest.mark.xfail(strict=False, reason=AFTER_NON_UTF8)
        ),
        "not_read",
    ],
)
def test_hostile_files_campaign_holds(
    campaign: tuple[CampaignResult, dict[str, Case]], invariant: str
) -> None:
    found = campaign[0].of(invariant)
    assert not found, oracle.report(found, campaign[0].seed)
