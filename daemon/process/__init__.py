"""Process: the daemon as a long-running program, and what it needs of its host.

==================  ===========================================================================
``runner``          ``dropsync run``: every part under one anyio task group (``Daemon``)
``early_signals``   signals from the first instant, before the event loop
``instance``        one daemon per store: the lock that holds its pid
``runstate``        the runtime state file beside the store (``dropsync status`` reads it)
``health``          what the daemon waits for (``PauseBoard``): logged, in the runtime file
``notify``          systemd's ``sd_notify``: READY, STATUS, the watchdog
``logs``            structlog set-up; secrets redacted from every line
``secrets``         provider secrets from an env var, a file or a systemd credential
``credentials``     credentials that change while the daemon runs, watched and handed over
``memory``          the garbage collector's settings for a streaming process
``retention``       the hourly pass that keeps the store's size flat
==================  ===========================================================================

``dropsync status`` loads ``runstate`` and ``instance`` (standard library only): this
package's ``__init__`` imports nothing. See ``docs/architecture.md``.
"""
