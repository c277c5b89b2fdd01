"""Delivery: what the store holds for providers sent to them, and what they hold pulled.

=====================  ========================================================================
``providers``          the provider supervisor: per provider a flusher, a puller, its health
``flusher``            the delivery loop, one per provider (``Flusher``)
``sending``            what the loop and its senders share (``Sender``, ``Attempt``, ``Answer``)
``batches``            the batch sender: records sent as requests, each written ahead
``filebatch``          the file sender: records sent as files (spooled, uploaded, settled)
``narrowing``          a file the provider skipped, narrowed down to the refused documents
``provider_health``    one provider's health: failures, waits, Retry-After, auth probes
``lanes``              a provider's lanes (a user each): a refused lane waits alone
``pulls``              pulling a provider per stream, page by page (``StreamPull``)
``requests``           requests a provider decides one by one, and its answers
=====================  ========================================================================

Delivery never imports ``ingest`` (nor ``ingest`` delivery); it dispatches on the ``Kind``
contract (``adapters.registry``) and never names a kind. This package's ``__init__`` imports
nothing. See ``docs/architecture.md``.
"""
