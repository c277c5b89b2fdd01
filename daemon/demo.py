"""``dropsync demo`` and ``dropsync emulate``: the daemon on built-in emulated providers."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson

from daemon.config import parse_config
from daemon.logs import configure_logging
from daemon.runner import Daemon


def sample_files(drop: Path) -> None:
    """Write the sample drop folder (only files not there yet)."""
    samples = {
        "contacts/guests.json": [
            {
                "email": "ann@example.com",
                "name_first": "Ann",
                "name_last": "Lee",
                "updated_at": "2024-05-02T10:45:12.798Z",
            },
            {
                "email": "bob@example.com",
                "name_first": "Bob",
                "name_last": "Ray",
                "updated_at": "2024-05-03T08:00:00Z",
            },
        ],
        "users/users.json": [
            {
                "data": {"id": 123, "email": "john@doe.com", "city": "Limassol"},
                "createdAt": 1696814606000,
                "updatedAt": 1696821819000,
            },
        ],
    }
    for name, documents in samples.items():
        path = drop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(orjson.dumps(documents, option=orjson.OPT_INDENT_2))


def run_demo(directory: Path, *, exit_when_synced: bool) -> int:
    """Run the daemon on sample files in ``directory``."""
    directory = directory.resolve()
    config = parse_config(
        {
            "store": {"path": str(directory / "dropsync.db")},
            "drop": {"path": str(directory / "drop")},
            "collections": {"contacts": {"key": "email", "timestamp": "updated_at"}},
        },
        "<demo>",
    )
    sample_files(config.drop_path)
    configure_logging(config.log_level)
    return anyio.run(Daemon(config, exit_when_synced=exit_when_synced).run)


def run_emulators(host: str, *, crm_port: int, favourites_port: int) -> int:
    """Serve the provider emulators until interrupted."""
    raise NotImplementedError
