"""Every number of the configuration has a documented range, held to the code.

The ranges are the table "Ranges of the numbers" in docs/config.md. Every numeric key of
the reference (``daemon/config_example.toml`` with its example lines made active) must be
in it, and every key in it must be one. Each key is then set, one at a time, to values
inside and outside its range (0, -1, 1e300, NaN, inf, a string, a fraction for a whole
number, each end of the range and just past it): ``check-config`` accepts a value inside and
refuses any other with exit 2, naming the file and the dotted key. ``run`` refuses the same
way (a sample, as a subprocess), and a daemon whose every number is at one end of its
range starts, ingests and stops.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dropsync.daemon.cli import main
from dropsync.daemon.cli.init import example_config

from tests.support import ROOT
from tests.test_config_reference import uncommented

SECRETS = {
    "CRM_TOKEN": "crm-token-1",
    "FAVOURITES_TOKENS": '{"u1": "fav-token-1"}',
    "LENOS_PASSWORD": "lenos-password-1",
    "CHURN_TOKEN": "churn-token-1",
    "CHURN_CALLBACK_SECRET": "churn-callback-1",
    "CRM_WEBHOOK_TOKEN": "crm-webhook-1",
}
ROW = re.compile(r"^\| `([a-z_.*]+)` \| (integer|number) \| (-?[0-9.,]+) \| ([0-9.,]+) \|")
COMMON_PROVIDER_KEYS = {
    "batch_max_items",
    "timeout_s",
    "backoff_base_s",
    "backoff_cap_s",
    "max_retry_after_s",
    "pull_interval_s",
    "confirm_timeout_s",
}


def documented_ranges() -> dict[str, tuple[str, int | float, int | float]]:
    """``docs/config.md``'s table: dotted key -> (integer | number, minimum, maximum)."""
    text = (ROOT / "docs/config.md").read_text()
    section = text.split("## Ranges of the numbers", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        if match := ROW.match(line):
            key, kind, low, high = match.groups()
            read = int if kind == "integer" else float
            found[key] = (kind, read(low.replace(",", "")), read(high.replace(",", "")))
    return found


def reference() -> dict[str, Any]:
    """The reference as a loadable config (brand_id and brand_field are alternatives)."""
    raw = tomllib.loads(uncommented(example_config()))
    del raw["providers"]["churn"]["brand_field"]
    return raw


def numeric_keys(raw: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Documented key pattern -> the path of that key in ``raw``."""
    found = {}

    def walk(table: dict[str, Any], path: tuple[str, ...]) -> None:
        for name, value in table.items():
            here = (*path, name)
            if isinstance(value, dict):
                walk(value, here)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                found[pattern(raw, here)] = here

    walk(raw, ())
    return found


def pattern(raw: dict[str, Any], path: tuple[str, ...]) -> str:
    if path[0] == "providers":
        name = path[2]
        owner = "*" if name in COMMON_PROVIDER_KEYS else raw["providers"][path[1]]["kind"]
        return f"providers.{owner}.{name}"
    return ".".join(path)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (churn's tables)
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def toml_text(raw: dict[str, Any]) -> str:
    """``raw`` as TOML: tables of tables as [headers], churn's ``tables`` inline."""
    lines: list[str] = []

    def table(values: dict[str, Any], path: tuple[str, ...]) -> None:
        if path:
            lines.append(f"[{'.'.join(path)}]")
        nested = {}
        for name, value in values.items():
            if isinstance(value, dict) and name != "tables":
                nested[name] = value
            else:
                lines.append(f"{name} = {toml_value(value)}")
        for name, value in nested.items():
            table(value, (*path, name))

    table(raw, ())
    return "\n".join(lines) + "\n"


def with_value(raw: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    changed = copy.deepcopy(raw)
    table = changed
    for name in path[:-1]:
        table = table[name]
    table[path[-1]] = value
    return changed


def probes(kind: str, low: int | float, high: int | float) -> Iterator[tuple[object, bool]]:
    """(value, inside the range) pairs for one key."""
    whole = kind == "integer"

    def inside(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if whole and not isinstance(value, int):
            return False
        return math.isfinite(value) and low <= value <= high

    candidates: list[object] = [0, -1, 1e300, math.nan, math.inf, -math.inf, "5", True]
    candidates += [int(low) if whole else low, int(high) if whole else high]
    candidates += [int(high) + 1 if whole else high * 1.001 + 0.001]
    candidates += [int(low) - 1 if whole else low - min(low, 0.0001) - 0.0001]
    if whole:
        candidates.append(float(int(low)) + 0.5)
    for value in candidates:
        yield value, inside(value)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def test_every_number_of_the_reference_has_a_documented_range() -> None:
    assert set(numeric_keys(reference())) == set(documented_ranges())


def test_check_config_takes_each_number_inside_its_range_and_refuses_any_other(
    tmp_path: Path, secrets: None, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = reference()
    ranges = documented_ranges()
    config = tmp_path / "dropsync.toml"
    refused_without_naming = []
    accepted_outside = []
    refused_inside = []
    for key, path in numeric_keys(raw).items():
        kind, low, high = ranges[key]
        dotted = ".".join(path)
        for value, inside in probes(kind, low, high):
            config.write_text(toml_text(with_value(raw, path, value)))
            code = main(["check-config", "--config", str(config)])
            err = capsys.readouterr().err
            if inside and code != 0:
                refused_inside.append((dotted, value, err))
            elif not inside and code != 2:
                accepted_outside.append((dotted, value, code))
            elif not inside and f"{config}: {dotted}: expected " not in err:
                refused_without_naming.append((dotted, value, err))
    assert accepted_outside == []
    assert refused_inside == []
    assert refused_without_naming == []


# What the issue found: each passed check-config, then `run` died at start (or told the
# CRM to call http://127.0.0.1:0).
RUN_SAMPLE = [
    (("store", "retain_days"), 1e300),
    (("drop", "keep_done_days"), 1e300),
    (("daemon", "max_clock_skew_s"), 1e306),
    (("drop", "parser_process_min_mb"), 1e305),
    (("daemon", "shutdown_grace_s"), 1e300),
    (("listener", "port"), 0),
    (("providers", "crm", "confirm_timeout_s"), 1e300),
    (("providers", "churn", "max_upload_mb"), math.nan),
    (("drop", "batch"), "5"),
]
