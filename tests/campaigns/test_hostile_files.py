"""Campaign 4: 49 hostile drop files made here, each followed by a good file, then a swarm of
small files at once (bench/campaign.py hostile: 20,000 files and an object of 10^6 keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import oracle
from tests.harness.hostile import Case, cases, hostile_files
from tests.harness.kill import CampaignResult

pytestmark = [pytest.mark.e2e, pytest.mark.campaign, pytest.mark.timeout(900)]

CI_CASES = 49


@pytest.fixture(scope="module")
def campaign(
    tmp_path_factory: pytest.TempPathFactory, seed: int
) -> tuple[CampaignResult, dict[str, Case]]:
    result, cases = hostile_files(
        tmp_path_factory.mktemp("hostile"),
        seed,
        many_files=100,
        many_keys=50_000,
        case_timeout=20,  # bounds a hang only: a case that settles is waited for no longer
    )
    print(f"hostile-files figures: {result.figures}")
    print(oracle.report(result.violations, seed))
    return result, {case.name: case for case in cases}


def test_at_least_40_hostile_files_were_tried(
    campaign: tuple[CampaignResult, dict[str, Case]],
) -> None:
    assert len(campaign[1]) == CI_CASES >= 40


@pytest.mark.parametrize("name", [case.name for case in cases(Path("/nonexistent"), 1)])
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


@pytest.mark.parametrize("invariant", ["liveness", "daemon_survives", "not_read", "error_logs"])
def test_hostile_files_campaign_holds(
    campaign: tuple[CampaignResult, dict[str, Case]], invariant: str
) -> None:
    found = campaign[0].of(invariant)
    assert not found, oracle.report(found, campaign[0].seed)
