"""Shared fixtures: the anyio backend and helpers to build stores in tmp_path."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from dropsync.daemon.process.logs import configure_logging

from tests import support

# Log lines go to stderr so tests can read a command's stdout as data.
configure_logging("info", sys.stderr)


@pytest.fixture(autouse=True)
def _e2e_marker_known(request: pytest.FixtureRequest) -> Iterator[None]:
    """Lets ``DaemonProcess`` refuse to start in a test not marked ``e2e``."""
    support.RUNNING_E2E_TEST = request.node.get_closest_marker("e2e") is not None
    yield
    support.RUNNING_E2E_TEST = None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
