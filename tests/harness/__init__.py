"""The campaign harness: the running daemon attacked as the world will (docs/campaigns.md).

``load`` (a seeded load generator and its ledger of what was produced and acknowledged),
``oracle`` (the conservation checks), ``proxy`` (a fault-injecting HTTP proxy in front of any
provider emulator), ``world`` (emulators, config and the daemon process), and the campaigns
built on them (``kill``, ``backlog``, ``faults``, ``hostile``). The campaign tests
(``tests/campaigns/``) and the full-size runs (``bench/campaign.py``, ``bench/soak.py``)
import it from here. It is test code: never in the wheel.
"""
