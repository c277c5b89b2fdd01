"""Ingest: what arrives locally, as drop files or inbox rows, merged into the store.

==================  ===========================================================================
``watcher``         finds settled files in the drop folder (inotify and a bounded rescan)
``inotify``         the kernel's inotify through ctypes, read in the event loop
``dropfiles``       the drop folder's file-system side: names, claims, locks, moves, receipts
``ingestor``        one file: claim, hash, parse, merge in batches, file away (``Ingestor``)
``parse``           a file's documents as batches of changes (here, or in the parser process)
``parser``          the parser process and its pipe, both ends
``jsonstream``      splitting a file into documents as a stream, in bounded memory
``recovery``        finishing what interrupted ingests left behind (``Sweeper``)
``inbox``           rows other programs INSERT into ``inbox`` (``InboxApplier``)
``wal_watch``       the store's write-ahead log watched: another program may have committed
==================  ===========================================================================

Ingest never imports ``delivery`` (nor ``delivery`` ingest): what both need (a document's
change, its canonical body, the JSON reader) is in ``daemon.documents`` and
``daemon.jsontext``. This package's ``__init__`` imports nothing, so that each module loads
alone (the parser process imports ``parser`` and no more). See ``docs/architecture.md``.
"""
