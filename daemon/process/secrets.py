"""Reading provider secrets from an env var, a file, or a systemd credential.

The value is returned to the adapter and nowhere else: it is never logged,
stored, or put in an error message (errors name the source only). A secret is
checked where it is read: one that could not travel in a header (a line break, a
control character, non-ASCII) is refused, at start, on reload and by check-config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dropsync.adapters.http import header_problem, secret_problem
from dropsync.adapters.registry import OptionError, get_kind, secret_in_headers, secret_values

from ..config import Config, ProviderConfig, SecretRef
from ..errors import ConfigError, SecretError

# Every secret value this process has read, for the last line of defence: an error that
# ends a command is reported with these values masked (``daemon.cli.outcome``).
_READ: set[str] = set()


def secrets_read() -> frozenset[str]:
    """The secret values this process has read so far."""
    return frozenset(_READ)


def remember_secrets(values: Iterable[str]) -> None:
    """Secret values learned while running (a user's new token): masked like those read."""
    _READ.update(value for value in values if value)


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
    except UnicodeDecodeError:
        # Its position and bytes are the secret's: not said.
        raise SecretError(f"provider {provider}: {ref.describe()} is not UTF-8 text") from None
    if not value:
        raise SecretError(f"provider {provider}: {ref.describe()} is empty")
    return value


def load_secret(config: ProviderConfig) -> tuple[str | None, list[str]]:
    """The provider's secret and the values of it that travel in requests, checked.

    Raises SecretError naming the provider and the source, never the value: the secret
    cannot be read, does not have the kind's shape (a JSON object of tokens, say), or a
    value could not go in a header (a control character, a line break, non-ASCII).
    """
    secret = read_secret(config.secret, config.name) if config.secret else None
    where = f"provider {config.name}: " + (
        config.secret.describe() if config.secret else "no secret configured"
    )
    try:
        values = secret_values(config.kind, secret)
    except OptionError as exc:
        raise SecretError(f"{where}: {exc.problem}") from None
    check = header_problem if secret_in_headers(config.kind) else secret_problem
    for value in values:
        problem = check(value)
        if problem is not None:
            raise SecretError(f"{where}: {problem}")
    return secret, values


def other_secrets(config: ProviderConfig) -> list[str]:
    """The values of the provider's other secrets (its kind's own: a callback key, a webhook
    token) that can be read now; the listener reports those that cannot."""
    values = []
    for ref in config.kind_secrets.values():
        try:
            values.append(read_secret(ref, config.name))
        except SecretError:
            continue
    return values


def _key(ref: SecretRef, names: tuple[str, str, str]) -> str:
    return names[0] if ref.env else names[1] if ref.file else names[2]


def check_secrets(config: Config) -> None:
    """Every provider's secrets, as ``load_secret`` checks them (ConfigError naming the key).

    What ``dropsync check-config`` and a reload (SIGHUP) refuse a config for. The kind's
    own secrets (a callback key, a webhook token) must be readable; one that travels in a
    URL must also be printable ASCII.
    """
    for provider in config.providers.values():
        try:
            load_secret(provider)
        except SecretError as exc:
            key = provider.secret.key if provider.secret else "secret_env"
            raise ConfigError(config.source, f"providers.{provider.name}.{key}", str(exc)) from None
        for secret in get_kind(provider.kind).secrets:
            ref = provider.kind_secrets.get(secret.name)
            if ref is None:
                continue
            key = f"providers.{provider.name}.{_key(ref, secret.keys)}"
            try:
                value = read_secret(ref, provider.name)
            except SecretError as exc:
                raise ConfigError(config.source, key, str(exc)) from None
            problem = header_problem(value) if secret.in_url else None
            if problem is not None:
                raise ConfigError(
                    config.source, key, f"provider {provider.name}: {ref.describe()}: {problem}"
                )
