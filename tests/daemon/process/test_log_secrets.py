"""The log pipeline removes every secret the daemon read, in any field, exceptions included."""

from __future__ import annotations

import io
import sys

import orjson
import structlog
from dropsync.daemon.process.logs import configure_logging, redact_in_logs

SECRET = "log-secret-7c1d9e"


def test_a_secret_never_reaches_a_log_line() -> None:
    out = io.StringIO()
    configure_logging("info", out)
    try:
        redact_in_logs([SECRET])
        log = structlog.get_logger("test")
        log.warning(
            "leaky",
            error=f"HTTP 400: you sent {SECRET}",
            nested={"list": [SECRET, 1, None], "deep": {"x": SECRET}},
            thing=ValueError(SECRET),
        )
        try:
            raise RuntimeError(f"failed with {SECRET}")
        except RuntimeError:
            log.exception("crashed")
    finally:
        configure_logging("info", sys.stderr)
    text = out.getvalue()
    assert SECRET not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert lines[0]["nested"]["list"][1:] == [1, None]
    assert "[redacted]" in lines[1]["exception"]
