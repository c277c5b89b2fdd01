"""Shared fixtures (the anyio backend, the listener's port, the churn secrets), and where a
test lives: an end-to-end test (marked ``e2e``) in ``tests/e2e/``, a campaign (marked
``campaign``) in ``tests/campaigns/``, and every other test beside the code it tests, so that
the fast stage (``-m "not e2e and not campaign"``) is every test of the other folders."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dropsync.daemon.process.logs import configure_logging

from tests import support
from tests.churn_support import CHURN_ENV

# Log lines go to stderr so tests can read a command's stdout as data.
configure_logging("info", sys.stderr)


# The folders of each slow marker's tests, and the marker each of them asks of its tests.
MARKED_IN = {"e2e": ("e2e", "campaigns"), "campaign": ("campaigns",)}
ASKS = {"e2e": "e2e", "campaigns": "campaign"}


def misplaced(items: list[pytest.Item], tests: Path) -> list[str]:
    """The tests whose folder does not match their markers (see the module doc)."""
    found = []
    for item in items:
        folder = item.path.relative_to(tests).parts[0]
        markers = {marker for marker in MARKED_IN if item.get_closest_marker(marker)}
        wrong = sorted(m for m in markers if folder not in MARKED_IN[m])
        if folder in ASKS and ASKS[folder] not in markers:
            wrong.append(f"not {ASKS[folder]}")
        found += [f"{item.nodeid}: marked {what}" for what in wrong]
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a run that holds a test in the wrong folder for its markers."""
    found = misplaced(items, Path(__file__).parent)
    if found:
        raise pytest.UsageError(
            "end-to-end tests live in tests/e2e/ (pytestmark = pytest.mark.e2e), campaigns in "
            "tests/campaigns/ (pytest.mark.campaign), nothing else does:\n  " + "\n  ".join(found)
        )


@pytest.fixture(autouse=True)
def _e2e_marker_known(request: pytest.FixtureRequest) -> Iterator[None]:
    """Lets ``DaemonProcess`` refuse to start in a test not marked ``e2e``."""
    support.RUNNING_E2E_TEST = request.node.get_closest_marker("e2e") is not None
    yield
    support.RUNNING_E2E_TEST = None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def churn_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The churn provider's secrets in the environment (``CHURN_ENV``, tests/churn_support.py)."""
    for name, value in CHURN_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def port() -> int:
    """A free loopback port for the listener."""
    return support.free_port()
