"""Errors of the store package.

StoreError              base: the store file cannot be used
├── SchemaTooNew        the file was written by a newer dropsync; refuse to touch it
├── StoreBusy           another writer holds the store (e.g. a second daemon)
├── StoreUnavailable    the file or its folder cannot be opened: the message names the
│                       path and the cause (missing folder, permissions, a folder, disk full)
└── StoreDamaged        SQLite reports the file damaged or not a database
"""

from __future__ import annotations


class StoreError(Exception):
    """The SQLite store cannot be opened or used."""


class SchemaTooNew(StoreError):
    """The store's schema version is newer than this program knows."""


class StoreBusy(StoreError):
    """The store is locked by another writer."""


class StoreUnavailable(StoreError):
    """The store file or its folder cannot be opened; the message names the path and cause."""


class StoreDamaged(StoreError):
    """SQLite reports the store file as damaged, or as not a database."""
