"""Emulators on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dropsync.adapters.crm.emulator import CrmEmulator
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.registrations.emulator import RegistrationsEmulator

REGISTRATIONS_PASSWORD = "pa55-w0rd-registrations"


@pytest.fixture
def crm_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(CrmEmulator({"acc_1": "crm-secret"})) as server:
        yield server


@pytest.fixture
def favourites_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(FavouritesEmulator({"tok-a": "alice", "tok-b": "bob"})) as server:
        yield server


@pytest.fixture
def registrations_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(RegistrationsEmulator(password=REGISTRATIONS_PASSWORD)) as server:
        yield server
