"""Fixtures shared by the churn and listener tests (churn_support.py has their helpers)."""

from __future__ import annotations

import pytest

from tests.daemon.churn_support import CHURN_ENV
from tests.support import free_port


@pytest.fixture
def churn_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The churn provider's secrets in the environment (``CHURN_ENV``)."""
    for name, value in CHURN_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def port() -> int:
    """A free loopback port for the listener."""
    return free_port()
