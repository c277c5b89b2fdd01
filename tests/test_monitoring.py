"""docs/monitoring: the alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), and the Grafana dashboard is one well-formed dashboard.

The metric names the dashboard and the rules use are checked against a live ``/metrics`` in
tests/e2e/test_metrics.py. promtool comes from Debian's ``prometheus`` package, its one
file extracted by .ci/run into build/promtool/ (docs/testing.md); without it the promtool tests
are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

MONITORING = ROOT / "docs" / "monitoring"
EXTRACTED = ROOT / "build" / "promtool" / "promtool"  # where .ci/run puts it


def promtool() -> Path:
    """promtool: on PATH, or where .ci/run extracted it (skips without it, outside CI)."""
    found = shutil.which("promtool") or (str(EXTRACTED) if EXTRACTED.exists() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run extracts it from Debian's prometheus")
        pytest.skip("needs promtool (.ci/run extracts it from Debian's prometheus package)")
    return Path(found)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *argv],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_alert_rules_are_valid() -> None:
    done = _run("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    done = _run("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = (MONITORING / "alerts.yml").read_text()
    tests = (MONITORING / "alerts_test.yml").read_text()
    names = {line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line}
    assert len(names) >= 9
    for name in names:
        assert f"alertname: {name}\n        exp_alerts:\n          - exp_labels:" in tests, name


def test_the_dashboard_is_one_well_formed_dashboard() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "dropsync" and dashboard["title"] == "dropsync"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'instance=~"$instance"' in target["expr"], target["expr"]
