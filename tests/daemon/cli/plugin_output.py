"""The Monitoring Plugins output grammar, strictly: tests parse ``status --check`` with it.

From the Monitoring Plugins Development Guidelines: the first line is
``SERVICE STATUS: text | perfdata``; perfdata is space-separated
``'label'=value[UOM];[warn];[crit];[min];[max]``, the label quoted when it holds a space (a
quote inside doubled, no ``=``), the value a plain decimal number (or ``U``), UOM one of
``s ms us % B KB MB TB c``, warn and crit ranges (``[@]start:end``, ``start`` may be ``~``,
either part may be missing: ``10`` is 0 to 10, ``10:`` is 10 and above), min and max plain
numbers; trailing semicolons may be left out. The text has no ``|`` (it starts perfdata).
"""

from __future__ import annotations

import re
from typing import NamedTuple

NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
RANGE = rf"@?(?:(?:~|{NUMBER})?:)?(?:{NUMBER})?"
LABEL = r"(?:'(?:[^'=]|'')+'|[^'= ]+)"
UOM = r"(?:s|ms|us|%|B|KB|MB|TB|c)?"
ITEM = re.compile(
    rf"(?P<label>{LABEL})=(?P<value>{NUMBER}|U)(?P<uom>{UOM})"
    rf"(?:;(?P<warn>{RANGE})(?:;(?P<crit>{RANGE})(?:;(?P<min>{NUMBER})?(?:;(?P<max>{NUMBER})?)?)?)?)?"
)
STATUS_LINE = re.compile(
    r"(?P<service>[A-Z][A-Z0-9_]*) (?P<status>OK|WARNING|CRITICAL|UNKNOWN): "
    r"(?P<text>[^|\n]+?)(?: \| (?P<perfdata>[^|\n]+))?"
)


class Perf(NamedTuple):
    """One perfdata item, parsed."""

    label: str
    value: str
    uom: str
    warn: str
    crit: str
    min: str
    max: str


class PluginOutput(NamedTuple):
    """A plugin's whole output, parsed."""

    service: str
    status: str
    text: str
    perfdata: dict[str, Perf]
    more: list[str]  # the lines after the first


def unquote(label: str) -> str:
    return label[1:-1].replace("''", "'") if label.startswith("'") else label


def parse_perfdata(text: str) -> dict[str, Perf]:
    """Every item of ``text`` (fails on anything the grammar does not allow)."""
    items: dict[str, Perf] = {}
    for word in split_items(text):
        match = ITEM.fullmatch(word)
        assert match is not None, f"not perfdata: {word!r}"
        name = unquote(match["label"])
        assert name not in items, f"label {name!r} twice"
        items[name] = Perf(
            name,
            match["value"],
            match["uom"],
            *(match[part] or "" for part in ("warn", "crit", "min", "max")),
        )
    return items


def split_items(text: str) -> list[str]:
    """Perfdata split on the spaces between items (not those inside a quoted label)."""
    items, current, quoted = [], "", False
    for char in text:
        if char == "'":
            quoted = not quoted
        if char == " " and not quoted:
            assert current, f"two spaces in a row in {text!r}"
            items.append(current)
            current = ""
        else:
            current += char
    assert current and not quoted, f"perfdata ends badly: {text!r}"
    return [*items, current]


def parse(output: str) -> PluginOutput:
    """The whole output of one run; fails unless the first line follows the grammar."""
    first, *more = output.rstrip("\n").split("\n")
    match = STATUS_LINE.fullmatch(first)
    assert match is not None, f"not a plugin status line: {first!r}"
    perfdata = parse_perfdata(match["perfdata"]) if match["perfdata"] else {}
    for line in more:
        assert "|" not in line, f"a further line with perfdata or a stray |: {line!r}"
    return PluginOutput(match["service"], match["status"], match["text"], perfdata, more)


def problem_lines(output: str) -> list[str]:
    """The output as ``LEVEL: text`` lines: the status line without service and perfdata."""
    parsed = parse(output)
    assert parsed.service == "DROPSYNC"
    return [f"{parsed.status}: {parsed.text}", *parsed.more]
