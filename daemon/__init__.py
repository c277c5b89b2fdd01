"""dropsync daemon: config, ingest, merge driving, delivery and the CLI."""
