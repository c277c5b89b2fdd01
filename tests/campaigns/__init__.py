"""Reliability campaigns: the running daemon attacked as the world will (see docs/campaigns.md).

Shared parts: ``load`` (a seeded load generator and its ledger of what was produced and
acknowledged), ``oracle`` (the conservation checks), ``proxy`` (a fault-injecting HTTP proxy in
front of any provider emulator) and ``world`` (emulators, config and the daemon process).
The same parts drive the full-size runs in ``bench/campaign_*.py``.
"""
