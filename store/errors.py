"""Errors of the store package.

StoreError              base: the store file cannot be used
├── SchemaTooNew        the file was written by a newer dropsync; refuse to touch it
├── SchemaTooOld        a read-only open of a file an older dropsync wrote (not migrated yet)
├── StoreUnavailable    the file or its folder cannot be opened: the message names the
│                       path and the cause (missing folder, permissions, a folder, disk full)
├── StoreDamaged        SQLite reports the file damaged or not a database
└── StoreRetryable      the store cannot be written now; it may be later (``condition`` says why)
    ├── StoreBusy       another program holds the store's write lock longer than busy_timeout
    └── StoreFull       the disk (or file system) holding the store is full
InboxTriggerFailed      a trigger another program created on ``inbox`` failed on the daemon's
                        own write: the inbox waits until it works or is dropped

OutsideFolder           a removal refused: its target is not inside the folder made for it
                        (``store.removal``); nothing was removed

``StoreRetryable`` is what the daemon's ``Store`` waits out, trying again (see
``store.handle``); one-shot commands report it and exit 1.
"""

from __future__ import annotations


class StoreError(Exception):
    """The SQLite store cannot be opened or used."""


class SchemaTooNew(StoreError):
    """The store's schema version is newer than this program knows."""


class SchemaTooOld(StoreError):
    """A read-only open of a store whose schema is older than this program's: not migrated."""

    def __init__(self, message: str, *, version: int, latest: int) -> None:
        super().__init__(message)
        self.version = version
        self.latest = latest


class StoreUnavailable(StoreError):
    """The store file or its folder cannot be opened; the message names the path and cause."""


class StoreDamaged(StoreError):
    """SQLite reports the store file as damaged, or as not a database."""


class StoreRetryable(StoreError):
    """The store cannot be written now; retrying later may succeed."""

    condition = "store unavailable"


class StoreBusy(StoreRetryable):
    """The store is locked by another writer."""

    condition = "store busy"


class StoreFull(StoreRetryable):
    """The disk holding the store is full."""

    condition = "disk full"


class InboxTriggerFailed(StoreError):
    """A trigger another program created on ``inbox`` failed on the daemon's own write (it
    calls a function only that program defines, or refuses the change with RAISE). Not a
    ``StoreRetryable``: the rest of the store works; the inbox waits (``daemon.ingest.inbox``)."""

    condition = "inbox trigger failed"


class OutsideFolder(Exception):
    """A removal was refused: its target is not inside the folder made for it."""
