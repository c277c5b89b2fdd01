"""A provider's state: the values of ``providers.state``, which ``status`` shows.

A ``StrEnum``: each member is the text stored (the table's CHECK constraint lists the same
four), so a member compares equal to what a query returns. The texts themselves are in
``store.state_values``, which ``dropsync status`` reads instead (no ``enum`` there).
"""

from __future__ import annotations

from enum import StrEnum

from . import state_values as values


class ProviderState(StrEnum):
    """Where a provider stands, after its last attempt."""

    ONLINE = values.PROVIDER_ONLINE  # its last request was taken (or nothing went wrong yet)
    OFFLINE = values.PROVIDER_OFFLINE  # not reached: connection refused or cut, timeout
    # answered, but not taken: waits out backoff or Retry-After
    BACKING_OFF = values.PROVIDER_BACKING_OFF
    # its credentials refused: waits for a reload, resync, restart
    AUTH_FAILED = values.PROVIDER_AUTH_FAILED


class LaneState(StrEnum):
    """Where a lane of a provider stands (``provider_lanes.state``: a user of it, say)."""

    ACTIVE = values.LANE_ACTIVE  # it has credentials and nothing refused them
    AUTH_FAILED = values.LANE_AUTH_FAILED  # the provider refused its credentials: it waits alone
    NO_TOKEN = values.LANE_NO_TOKEN  # it has no credentials: its entries wait for them
