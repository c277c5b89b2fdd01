"""A provider's state: the values of ``providers.state``, which ``status`` shows.

A ``StrEnum``: each member is the text stored (the table's CHECK constraint lists the same
four), so a member compares equal to what a query returns. Standard library only:
``dropsync status`` imports it and stays light.
"""

from __future__ import annotations

from enum import StrEnum


class ProviderState(StrEnum):
    """Where a provider stands, after its last attempt."""

    ONLINE = "online"  # its last request was taken (or nothing went wrong yet)
    OFFLINE = "offline"  # not reached: connection refused or cut, timeout
    BACKING_OFF = "backing-off"  # answered, but not taken: waits out backoff or Retry-After
    AUTH_FAILED = "auth-failed"  # its credentials refused: waits for a reload, resync, restart


class LaneState(StrEnum):
    """Where a lane of a provider stands (``provider_lanes.state``: a user of it, say)."""

    ACTIVE = "active"  # it has credentials and nothing refused them
    AUTH_FAILED = "auth-failed"  # the provider refused its credentials: it waits alone
    NO_TOKEN = "no-token"  # it has no credentials: its entries wait for them
