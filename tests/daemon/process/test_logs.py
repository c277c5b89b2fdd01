"""Log lines for people on a terminal, JSON lines otherwise, priorities under journald, and
every line one line."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import orjson
import pytest
import structlog
from dropsync.daemon.process.logs import configure_logging

log = structlog.get_logger("dropsync.test")


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("NO_COLOR", "DROPSYNC_LOG_FORMAT", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    yield
    configure_logging("info", sys.stderr)


@pytest.fixture
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A real pseudo-terminal: the stream the logs go to, and the side that reads them."""
    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w", buffering=1)
    yield stream, leader
    stream.close()
    os.close(leader)


def written(leader: int) -> str:
    return os.read(leader, 65536).decode()


def test_on_a_terminal_lines_are_for_people_with_colour(terminal: tuple[TextIO, int]) -> None:
    stream, leader = terminal
    configure_logging("info", stream)
    log.info("provider_offline", provider="crm")
    text = written(leader)
    assert "provider_offline" in text and "provider" in text and "crm" in text
    assert not text.lstrip().startswith("{")
    assert "\x1b[" in text  # colours


def test_no_color_is_honoured(
    terminal: tuple[TextIO, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, leader = terminal
    monkeypatch.setenv("NO_COLOR", "1")
    configure_logging("info", stream)
    log.info("provider_offline", provider="crm")
    text = written(leader)
    assert "provider_offline" in text and "\x1b[" not in text


def test_not_a_terminal_gets_json_lines() -> None:
    out = io.StringIO()
    configure_logging("info", out)
    log.info("provider_offline", provider="crm")
    line = orjson.loads(out.getvalue())
    assert line["event"] == "provider_offline" and line["provider"] == "crm"
    assert line["level"] == "info"


def test_the_format_can_be_chosen_either_way(
    terminal: tuple[TextIO, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, leader = terminal
    monkeypatch.setenv("DROPSYNC_LOG_FORMAT", "json")
    configure_logging("info", stream)
    log.info("on_a_terminal")
    assert orjson.loads(written(leader).strip())["event"] == "on_a_terminal"
    monkeypatch.setenv("DROPSYNC_LOG_FORMAT", "console")
    out = io.StringIO()
    configure_logging("info", out)
    log.info("into_a_pipe", provider="crm")
    assert "into_a_pipe" in out.getvalue() and not out.getvalue().startswith("{")
    assert "\x1b[" not in out.getvalue()  # colours only ever on a terminal


def test_every_line_is_one_line_whatever_a_value_or_an_exception_holds() -> None:
    for chosen in ("json", "console"):
        os.environ["DROPSYNC_LOG_FORMAT"] = chosen
        out = io.StringIO()
        configure_logging("info", out)
        try:
            raise ValueError("first line\nsecond line")
        except ValueError:
            log.exception("pull_failed", body="<html>\n<body>\r\nno</body>")
        assert out.getvalue().count("\n") == 1, (chosen, out.getvalue())
        assert "second line" in out.getvalue()
    del os.environ["DROPSYNC_LOG_FORMAT"]


def test_under_journald_every_line_carries_its_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        configure_logging("debug", stream)
        log.debug("a")
        log.info("b")
        log.warning("c")
        log.error("d")
    lines = (tmp_path / "journal").read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert [orjson.loads(line[3:])["event"] for line in lines] == ["a", "b", "c", "d"]


def test_journal_stream_naming_another_file_adds_no_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = os.stat(tmp_path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{other.st_dev}:{other.st_ino}")
    with (tmp_path / "log").open("w") as stream:
        configure_logging("info", stream)
        log.error("d")
    assert (tmp_path / "log").read_text().startswith('{"')
