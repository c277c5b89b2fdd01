"""dropsync daemon: the flows that move data between local places and providers.

=====================  ========================================================================
``ingest/``            drop files and inbox rows into the store
``delivery/``          the store's outbox to providers, and providers' pulls into the store
``inbound/``           the listener: providers' callbacks, health, metrics
``process/``           the daemon as a program: runner, signals, lock, logs, secrets, systemd
``cli/``               the ``dropsync`` command, one module per subcommand
``demo``               ``dropsync demo`` and ``emulate`` (``demo_view``: what the demo shows)
=====================  ========================================================================

Shared by every flow, at this level: ``config`` (and ``config_file``, which ``status`` reads
alone), ``clock``, ``errors`` (the daemon's one errors module), ``metrics`` (the instruments
every flow counts into), ``names`` (file names as text), ``places`` (where the daemon's own
files are), ``documents`` (a document becomes a
change: one shape, key, timestamp and canonical body, for drop files, inbox rows and pulls)
and ``jsontext`` (JSON text to values, one way). The map: ``docs/architecture.md``.
"""
