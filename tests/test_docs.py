"""The docs say what the code does: the SQL cookbook runs, docs/systemd.md's STATUS= interval
is the code's, every message an operator can see is in docs/troubleshooting.md."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sqlite3
from pathlib import Path

import anyio
import pytest
from dropsync.daemon.process.runner import STATUS_EVERY_S
from dropsync.store.handle import Store

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def blocks(name: str, language: str) -> list[str]:
    text = (DOCS / name).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def test_every_query_of_the_cookbook_runs_on_a_real_store(tmp_path: Path) -> None:
    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    db = sqlite3.connect(tmp_path / "s.db")
    queries = blocks("cookbook.md", "sql")
    assert len(queries) >= 10
    for block in queries:
        db.executescript(block)  # raises on any statement SQLite refuses
    db.close()


def test_systemd_md_gives_the_status_interval_the_code_uses() -> None:
    text = (DOCS / "systemd.md").read_text()
    assert f"`STATUS=` every {STATUS_EVERY_S:g} s" in text
    assert re.findall(r"`STATUS=` every (\d+) s", text) == [f"{STATUS_EVERY_S:g}"]


def logged_events(level: tuple[str, ...]) -> set[str]:
    """Event names logged at these levels anywhere in the code (``log.warning("name", ...)``)."""
    found = set()
    for folder in ("daemon", "store", "adapters"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in level
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and re.fullmatch(r"[a-z][a-z0-9_]+", node.args[0].value)
                ):
                    found.add(node.args[0].value)
    return found


def test_every_warning_and_error_an_operator_can_see_is_in_troubleshooting() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    events = logged_events(("warning", "error", "exception", "critical"))
    assert len(events) > 10
    missing = sorted(e for e in events if f"`{e}`" not in text)
    assert missing == [], f"log events not in docs/troubleshooting.md: {missing}"


# --- docs/architecture.md names only what exists -------------------------------------------------

CODE_NAME = re.compile(r"`((?:daemon|store|adapters)(?:\.\w+)+)`")
# Class.attribute: its class is named in full on the page
SHORT_NAME = re.compile(r"`([A-Z][a-z]\w*(?:\.[a-z_]\w*)+)`")
PATH = re.compile(r"`((?:daemon|store|adapters|docs|tests)/[\w./-]*)`")


def resolve(dotted: str) -> object:
    """The object ``dropsync.<dotted>`` names: the longest module prefix, then attributes."""
    parts = f"dropsync.{dotted}".split(".")
    for cut in range(len(parts), 1, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)  # AttributeError: the page names what is gone
        return found
    raise ModuleNotFoundError(dotted)


def architecture_names(text: str) -> tuple[list[str], list[str], list[str]]:
    """(qualified names, Class.attribute names, paths) the page gives in backticks."""
    return CODE_NAME.findall(text), SHORT_NAME.findall(text), PATH.findall(text)


def test_every_function_docs_architecture_names_exists() -> None:
    text = (DOCS / "architecture.md").read_text()
    qualified, short, paths = architecture_names(text)
    assert len(qualified) >= 40
    classes = {}
    for name in qualified:
        found = resolve(name)
        if inspect.isclass(found):
            classes[found.__name__] = found
        elif inspect.isclass(owner := resolve(name.rpartition(".")[0])):
            classes[owner.__name__] = owner
    for name in short:
        head, *attributes = name.split(".")
        assert head in classes, f"{name}: name its class in full once on the page"
        found = classes[head]
        for attribute in attributes:
            found = getattr(found, attribute)
    missing = [path for path in paths if not (ROOT / path.rstrip("/")).exists()]
    assert missing == []


def test_the_architecture_check_refuses_a_name_that_is_gone() -> None:
    qualified, short, paths = architecture_names(
        "`daemon.ingest.ingestor.Ingestor.no_such` `Ingestor.gone` `daemon/nowhere.py` `README.md`"
    )
    assert (qualified, short, paths) == (
        ["daemon.ingest.ingestor.Ingestor.no_such"],
        ["Ingestor.gone"],
        ["daemon/nowhere.py"],
    )
    with pytest.raises(AttributeError):
        resolve(qualified[0])
    with pytest.raises(AttributeError):
        resolve("daemon.no_such_module.f")
