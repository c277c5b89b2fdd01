"""Shared fixtures: the anyio backend and helpers to build stores in tmp_path."""

from __future__ import annotations

import sys

import pytest
from dropsync.daemon.logs import configure_logging

# Log lines go to stderr so tests can read a command's stdout as data.
configure_logging("info", sys.stderr)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
