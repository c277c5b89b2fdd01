"""Errors of the store package.

StoreError              base: the store file cannot be used
├── SchemaTooNew        the file was written by a newer dropsync; refuse to touch it
└── StoreBusy           another writer holds the store (e.g. a second daemon)
"""

from __future__ import annotations


class StoreError(Exception):
    """The SQLite store cannot be opened or used."""


class SchemaTooNew(StoreError):
    """The store's schema version is newer than this program knows."""


class StoreBusy(StoreError):
    """The store is locked by another writer."""
