"""Inbound: what the world asks of the running daemon over HTTP (the ``[listener]``).

=======================  ======================================================================
``listener``             the listener: the kinds' inbound routes, health, readiness, metrics
``listener_server``      its HTTP server: uvicorn on the daemon's loop, on sockets bound here
``listener_calls``       what the daemon does for a call to a kind's route (``ListenerCall``)
``held_confirmations``   sync statuses held a while, applied again to what is recorded later
``log_repeats``          log lines that may come in floods, summarised
``metrics_scrape``       ``GET /metrics``: the instruments, and the store's figures read then
``status_page``          ``GET /``: a read-only status page (``status_html`` writes its HTML)
=======================  ======================================================================

Inbound imports nothing of the insides of ``ingest`` or ``delivery``: only what their
package ``__init__`` itself offers (today nothing; what the listener must ask of delivery,
such as waking a provider, the runner hands it). See ``docs/architecture.md``.
"""
