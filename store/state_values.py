"""The texts ``providers.state`` and ``provider_lanes.state`` hold, as plain strings.

``store.states`` makes its ``StrEnum`` members of these; ``dropsync status`` compares with
these (importing ``enum`` would cost it about 3 ms, a fifth of starting Python).
"""

PROVIDER_ONLINE = "online"
PROVIDER_OFFLINE = "offline"
PROVIDER_BACKING_OFF = "backing-off"
PROVIDER_AUTH_FAILED = "auth-failed"

LANE_ACTIVE = "active"
LANE_AUTH_FAILED = "auth-failed"
LANE_NO_TOKEN = "no-token"
