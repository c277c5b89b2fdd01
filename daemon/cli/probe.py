"""``dropsync probe [PROVIDER]``: are the credentials working?

For every configured provider (or the one named), the adapter's probe: one cheap
authenticated request that changes nothing at the provider (``adapters.base.Probes``).
One line per provider: ``ok``, ``refused`` (the credentials), ``unreachable`` (with the
cause) or ``misconfigured`` (a redirect, a 404, an answer of another shape). It reads the
config and the secrets only: no store, no lock, so it runs beside the daemon.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .common import EXIT_FAILURE, EXIT_OK, checked_config, log_to_stderr

if TYPE_CHECKING:
    from ..config import Config, ProviderConfig

HELP = "check each provider's credentials with one request that changes nothing"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Probed:
    """What one provider's probe found."""

    provider: str
    kind: str
    state: str  # ok | refused | unreachable | misconfigured | unknown
    request: str | None  # what was asked, when the probe got that far
    detail: str  # the cause, secret-free ("" when ok)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``[PROVIDER]``, ``--json``, ``--timeout``."""
    parser.add_argument(
        "provider",
        metavar="PROVIDER",
        nargs="?",
        help="a provider name from the config (default: every provider)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on a provider that has not answered after SECONDS "
        f"(default {DEFAULT_TIMEOUT_S:g})",
    )


def run(args: argparse.Namespace) -> int:
    """Probe the providers at once; exit 0 only when every one is ok."""
    import anyio

    from .outcome import mask_secrets

    log_to_stderr()
    config = checked_config(args)
    providers = _chosen(config, args.provider)
    _check_secrets(config, providers)
    found = anyio.run(_probe_all, providers, args.timeout)
    code = EXIT_OK if all(p.state == "ok" for p in found) else EXIT_FAILURE
    text = mask_secrets(_json(found) if args.json else _lines(found))
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `probe | head -1` keeps the probe's exit code
        from .outcome import silence_stdout

        silence_stdout()
    return code


def _lines(found: list[Probed]) -> str:
    if not found:
        return "no providers configured"
    lines = []
    for probed in found:
        asked = f" ({probed.kind}: {probed.request})" if probed.request else f" ({probed.kind})"
        cause = f": {probed.detail}" if probed.detail else ""
        lines.append(f"{probed.provider}: {probed.state}{asked}{cause}")
    return "\n".join(lines)


def _json(found: list[Probed]) -> str:
    from .common import dump_json

    return dump_json(
        {
            "ok": all(p.state == "ok" for p in found),
            "providers": [
                {
                    "provider": p.provider,
                    "kind": p.kind,
                    "state": p.state,
                    "request": p.request,
                    "detail": p.detail,
                }
                for p in found
            ],
        }
    )


def _chosen(config: Config, name: str | None) -> list[ProviderConfig]:
    if name is None:
        return list(config.providers.values())
    if name not in config.providers:
        from ..errors import UsageError

        configured = ", ".join(sorted(config.providers)) or "none"
        raise UsageError(f"unknown provider {name!r}; configured: {configured}")
    return [config.providers[name]]


def _check_secrets(config: Config, providers: list[ProviderConfig]) -> None:
    """A secret that cannot be read, or has not the kind's shape, is a config error."""
    from ..errors import ConfigError, SecretError
    from ..process.secrets import load_secret

    for provider in providers:
        try:
            load_secret(provider)
        except SecretError as exc:
            key = provider.secret.key if provider.secret else "secret_env"
            raise ConfigError(config.source, f"providers.{provider.name}.{key}", str(exc)) from None


async def _probe_all(providers: list[ProviderConfig], timeout_s: float) -> list[Probed]:
    import anyio

    found: dict[str, Probed] = {}

    async def one(provider: ProviderConfig) -> None:
        found[provider.name] = await _probe(provider, timeout_s)

    async with anyio.create_task_group() as tg:
        for provider in providers:
            tg.start_soon(one, provider)
    return [found[p.name] for p in providers]


async def _probe(config: ProviderConfig, timeout_s: float) -> Probed:
    """One provider's probe, its answer told by the error type alone (no kind is named)."""
    import anyio
    from dropsync.adapters.base import Probes
    from dropsync.adapters.errors import (
        AuthError,
        PermanentError,
        ProviderError,
        ProviderMisconfigured,
        UnexpectedAnswer,
    )
    from dropsync.adapters.options import OptionError

    from ..delivery.providers import open_provider

    def result(state: str, detail: str = "", request: str | None = None) -> Probed:
        return Probed(config.name, config.kind, state, request, detail)

    try:
        provider = open_provider(config)
    except OptionError as exc:  # e.g. a proxy variable of the environment that cannot be used
        return result("misconfigured", str(exc))
    async with provider as adapter:
        if not isinstance(adapter, Probes):
            return result("unknown", "this provider kind has no probe request")
        try:
            with anyio.fail_after(timeout_s):
                asked = await adapter.probe()
        except TimeoutError:
            return result("unreachable", f"no answer within {timeout_s:g} s")
        except AuthError as exc:
            return result("refused", str(exc))
        except (ProviderMisconfigured, UnexpectedAnswer, PermanentError) as exc:
            return result("misconfigured", str(exc))
        except ProviderError as exc:
            # No answer (connection refused, a timeout), or one that says "not now" (429,
            # 5xx): either way the credentials could not be checked.
            cause = _socket_cause(exc)
            detail = str(exc) if cause is None or cause in str(exc) else f"{exc} ({cause})"
            return result("unreachable", detail)
    return result("ok", request=asked)


def _socket_cause(exc: BaseException) -> str | None:
    """The operating system's words under a connection failure ("Connection refused",
    "Name or service not known"), from the chained causes; None when there is none."""
    import os

    deepest: OSError | None = None
    seen: set[int] = set()
    current: BaseException | None = exc.__cause__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            deepest = current
        current = current.__cause__ or current.__context__
    if deepest is None:
        return None
    if deepest.errno is not None and deepest.errno > 0:
        return os.strerror(deepest.errno)
    return deepest.strerror or str(deepest) or None
