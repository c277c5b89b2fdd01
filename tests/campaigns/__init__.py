"""Reliability campaigns: the running daemon attacked as the world will (see docs/campaigns.md).

The tests here run each campaign at CI size; the harness they drive is ``tests.harness``
(``bench/campaign.py`` runs the same campaigns at full size).
"""
