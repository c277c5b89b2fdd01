"""``/metrics`` of the daemon as a real subprocess: every family parses and has the type its
name says, the counters grow with ingest, delivery and callbacks, only grow across a reload
(SIGHUP), no label holds a key or a file name, and the dashboard and the alert rules use only
names the daemon exports."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.store.states import ProviderState

from tests.churn_support import churn_daemon, listener_emulator
from tests.metrics_support import families, sample_names, samples, scrape, value
from tests.support import ROOT, drop_json, free_port, wait_until

pytestmark = pytest.mark.e2e  # a real daemon subprocess: `pytest -m "not e2e"` skips these

MONITORING = ROOT / "docs" / "monitoring"
T0 = 1_700_000_000_000


def _docs(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"data": {"id": i, "email": f"u{i}@example.org"}, "createdAt": T0, "updatedAt": T0 + i}
        for i in range(first, first + count)
    ]


def _delivered(url: str, records: int) -> bool:
    return value(samples(scrape(url)), "dropsync_records_delivered_total", provider="churn") >= (
        records
    )


def test_counters_grow_with_the_work_and_only_grow_across_a_reload(tmp_path: Path) -> None:
    port = free_port()
    churn = listener_emulator(port)
    url = f"http://127.0.0.1:{port}"
    with EmulatorServer(churn) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            wait_until(lambda: _answers(url), what="the listener")
            text = scrape(url)
            found = families(text)
            for name, family in found.items():
                if name.startswith("dropsync_"):
                    assert family.type in ("counter", "gauge", "histogram"), name
                    assert family.documentation, name
            first = samples(text)
            # Declared at 0 before anything happened: a rate reads 0, not nothing.
            assert ("dropsync_records_delivered_total", (("provider", "churn"),)) in first
            assert value(first, "dropsync_build_info", version="0.1.0", python=_python(first)) == 1
            for name in ("process_resident_memory_bytes", "process_open_fds"):
                assert value(first, name) > 0
            assert ("process_cpu_seconds_total", ()) in first
            assert value(first, "dropsync_store_readable") == 1
            assert value(first, "dropsync_oldest_pending_age_seconds", provider="churn") == 0
            assert value(first, "dropsync_paused_users", provider="churn") == 0
            states = {
                s: value(first, "dropsync_provider_state", provider="churn", state=s)
                for s in ProviderState
            }
            assert states == {s: (1 if s == ProviderState.ONLINE else 0) for s in ProviderState}
            assert found["dropsync_paused"].samples and all(
                s.value == 0 for s in found["dropsync_paused"].samples
            )

            drop_json(tmp_path / "drop/users", "a", _docs(0, 4))
            daemon.wait_for("batch_delivered", provider="churn")
            drop_json(tmp_path / "drop/users", "again", _docs(0, 4))  # the same content
            bad = [*_docs(10, 1), {"data": {"email": "no-id@example.org"}, "updatedAt": T0}]
            drop_json(tmp_path / "drop/users", "bad", bad)
            drop_json(tmp_path / "drop/extra", "unrouted", _docs(20, 2))  # no config names it
            # Folder names a label must escape, or cannot hold as they are.
            drop_json(tmp_path / 'drop/we"ird\\one', "odd", _docs(25, 1))
            not_utf8 = os.fsencode(tmp_path / "drop") + b"/bad\xff"
            os.mkdir(not_utf8)
            with open(not_utf8 + b"/x.json", "wb") as file:
                file.write(b"[]")
            wait_until(lambda: _delivered(url, 5), what="the second delivery counted")
            daemon.wait_for("file_ingested", file="unrouted.json")
            daemon.wait_for("file_ingested", file="odd.json")
            daemon.wait_for("file_ingested", collection="bad\\xff")  # its folder renamed so
            daemon.wait_for("ingest_duplicate", file="again.json")

            text = scrape(url)
            after = samples(text)
            docs = "dropsync_ingest_documents_total"
            assert value(after, docs, collection="users", outcome="applied") == 5
            assert value(after, docs, collection="users", outcome="rejected") == 1
            assert value(after, docs, collection="extra", outcome="applied") == 2
            files = "dropsync_ingest_files_total"
            assert value(after, files, collection="users", outcome="done") == 1
            assert value(after, files, collection="users", outcome="duplicate") == 1
            assert value(after, files, collection="users", outcome="quarantined") == 1
            assert value(after, files, collection="extra", outcome="done") == 1
            assert value(after, docs, collection='we"ird\\one', outcome="applied") == 1
            assert value(after, files, collection="bad\\xff", outcome="done") == 1
            assert value(after, "dropsync_ingest_file_duration_seconds_count") == 6
            assert value(after, "dropsync_records_delivered_total", provider="churn") == 5
            assert value(after, "dropsync_records_dead_lettered_total", provider="churn") == 0
            requests = value(
                after, "dropsync_delivery_requests_total", provider="churn", outcome="ok"
            )
            assert requests >= 2
            assert (
                value(after, "dropsync_delivery_request_duration_seconds_count", provider="churn")
                == requests
            )
            assert value(after, "dropsync_drop_to_provider_seconds_count", provider="churn") >= 2
            assert value(after, "dropsync_uploaded_bytes_total", provider="churn") > 0
            # Nothing confirmed before the provider's callback says so.
            assert value(after, "dropsync_records_confirmed_total", provider="churn") == 0

            control = f"{server.base_url}/_emulator/send"
            assert httpx.post(control, json={"kind": "sync-status"}).json() == {"status": 200}
            replay = httpx.post(control, json={"kind": "sync-status", "replay": True})
            assert replay.json() == {"status": 401}
            before_reload = samples(scrape(url))
            assert value(before_reload, "dropsync_records_confirmed_total", provider="churn") == 5
            received = "dropsync_callbacks_received_total"
            assert value(before_reload, received, route="sync-status") == 2
            refused = "dropsync_callbacks_refused_total"
            assert value(before_reload, refused, route="sync-status", reason="replay") == 1
            _no_key_or_file_name_in_labels(before_reload)

            daemon.mark_log()
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("config_reloaded")
            reloaded = samples(scrape(url))
            _only_grew(before_reload, reloaded)
            assert value(reloaded, "dropsync_records_delivered_total", provider="churn") == 5
            assert value(reloaded, "dropsync_config_last_reload_successful") == 1

            # A reload refused: the daemon runs on (its counters too) and says so.
            good = daemon.config_path.read_text()
            daemon.config_path.write_text(good + "\n[store\n")
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("config_reload_failed")
            refused_reload = samples(scrape(url))
            assert value(refused_reload, "dropsync_config_last_reload_successful") == 0
            _only_grew(reloaded, refused_reload)
            daemon.config_path.write_text(good)
            daemon.mark_log()
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("config_reloaded")
            reloaded = samples(scrape(url))
            assert value(reloaded, "dropsync_config_last_reload_successful") == 1
            _only_grew(refused_reload, reloaded)

            drop_json(tmp_path / "drop/users", "b", _docs(30, 3))
            wait_until(lambda: _delivered(url, 8), what="a delivery after the reload counted")
            last = samples(scrape(url))
            _only_grew(reloaded, last)
            assert value(last, docs, collection="users", outcome="applied") == 8
            assert value(last, "process_start_time_seconds") == value(
                first, "process_start_time_seconds"
            )
            assert daemon.stop() == 0
        finally:
            daemon.close()


def test_the_dashboard_and_the_alert_rules_use_only_names_the_daemon_exports(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with EmulatorServer(listener_emulator(port)) as server:
        daemon = churn_daemon(tmp_path, server.base_url, port)
        try:
            daemon.start()
            wait_until(lambda: _answers(url), what="the listener")
            exported = sample_names(families(scrape(url)).values()) | {"up"}
            assert daemon.stop() == 0
        finally:
            daemon.close()
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for t in _targets(dashboard)]
    expressions += [
        query["query"]
        for query in dashboard["templating"]["list"]
        if isinstance(query.get("query"), str) and query.get("type") == "query"
    ]
    assert len(expressions) >= 10
    rules = (MONITORING / "alerts.yml").read_text()
    alerts = re.findall(r"^\s+expr: (.+)$", rules, re.MULTILINE)  # each on one line
    assert len(alerts) == rules.count("- alert: ") >= 8
    expressions += alerts
    used = set()
    for expression in expressions:
        names = metric_names(expression)
        assert names, expression
        used |= names
    assert used - exported == set()
    # The dashboard shows what the issue asks: pending, oldest age, deliveries, latency,
    # ingest, dead letters, states.
    for name in (
        "dropsync_pending",
        "dropsync_oldest_pending_age_seconds",
        "dropsync_records_delivered_total",
        "dropsync_delivery_request_duration_seconds_bucket",
        "dropsync_ingest_documents_total",
        "dropsync_dead_letters",
        "dropsync_provider_state",
    ):
        assert any(name in metric_names(e) for e in expressions), name


# PromQL words that are not metric names: functions, aggregations, modifiers, keywords.
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values`` query) reads:
    strings, label matchers, ranges and grouping clauses removed, then every identifier that
    is not a function call or a keyword."""
    text = re.sub(r"label_values\((.*),\s*\w+\)", r"\1", expression)  # its metric, not label
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = list(dashboard["panels"])
    found: list[dict[str, Any]] = []
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        found.extend(t for t in panel.get("targets", []) if "expr" in t)
    return found


def _only_grew(before: dict[Any, float], after: dict[Any, float]) -> None:
    """Every counter (and histogram series) of the daemon is at least what it was."""
    for key, was in before.items():
        name = key[0]
        if name.startswith("dropsync_") and name.endswith(("_total", "_count", "_sum", "_bucket")):
            assert key in after, key
            assert after[key] >= was, (key, was, after[key])


def _no_key_or_file_name_in_labels(found: dict[Any, float]) -> None:
    values = {
        v for name, labels in found if name.startswith("dropsync_") for k, v in labels if k != "le"
    }
    for value_ in values:
        assert "@" not in value_ and ".json" not in value_, value_
    assert not {str(i) for i in range(40)} & values


def _python(found: dict[Any, float]) -> str:
    return str(
        next(dict(labels)["python"] for name, labels in found if name == "dropsync_build_info")
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
