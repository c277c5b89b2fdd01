"""Reading provider secrets from an env var, a file, or a systemd credential.

The value is returned to the adapter and nowhere else: it is never logged,
stored, or put in an error message (errors name the source only).
"""

from __future__ import annotations

import os
from pathlib import Path

from dropsync.daemon.config import SecretRef
from dropsync.daemon.errors import SecretError

# Every secret value this process has read, for the last line of defence: an error that
# ends a command is reported with these values masked (``daemon.cli.outcome``).
_READ: set[str] = set()


def secrets_read() -> frozenset[str]:
    """The secret values this process has read so far."""
    return frozenset(_READ)


def read_secret(ref: SecretRef, provider: str) -> str:
    """The secret ``ref`` points at, stripped of surrounding whitespace."""
    value = _read_secret(ref, provider)
    _READ.add(value)
    return value


def _read_secret(ref: SecretRef, provider: str) -> str:
    if ref.env:
        value = os.environ.get(ref.env)
        if not value:
            raise SecretError(f"provider {provider}: {ref.describe()} is not set or empty")
        return value.strip()
    if ref.file:
        path = ref.file
    else:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"provider {provider}: {ref.describe()} needs $CREDENTIALS_DIRECTORY "
                "(set by systemd's LoadCredential=); it is not set"
            )
        path = Path(directory) / str(ref.credential)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(
            f"provider {provider}: cannot read {ref.describe()}: {exc.strerror}"
        ) from None
    if not value:
        raise SecretError(f"provider {provider}: {ref.describe()} is empty")
    return value
