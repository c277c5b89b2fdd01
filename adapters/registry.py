"""Provider kinds: the one list of the kinds this version has, and the contract each fulfils.

A kind is one home, the package ``adapters/<kind>/``. Its ``KIND`` (a ``Kind``, in the
package's ``__init__``) says what the daemon needs to know of it and names the kind's
modules, each imported only when needed (so reading the config stays cheap): its adapter
(``AdapterModule``: options, the adapter itself, its secret's shape) and the optional
hooks (secrets of its own, request collections, deliveries confirmed by a callback, inbound
routes, an emulator with its part of the demo, a secret that other options can stand in for,
whether it sends, its options that are paths). Its adapter should also have the optional
``probe()`` (``adapters.base.Probes``: one request that checks the credentials and changes
nothing), which ``dropsync probe`` sends. The daemon asks these and never names a kind
(``tests/test_design_rules.py`` holds it); ``docs/adding-a-kind.md`` says how to add one:
its package, and one line in ``_LOADERS``.

``KINDS`` names every kind; the config accepts exactly these (``daemon.config`` derives its
list from here).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .options import OptionError

if TYPE_CHECKING:
    from .base import Provider
    from .emulators.demo import DemoPart
    from .inbound import Inbound

__all__ = [
    "KINDS",
    "AdapterModule",
    "EmulatorHook",
    "Kind",
    "KindSecret",
    "OptionError",
    "build_provider",
    "emulated",
    "every_kind",
    "get_kind",
    "lazy",
    "parse_options",
    "secret_in_headers",
    "secret_values",
]


def lazy(package: str, module: str, attribute: str | None = None) -> Callable[[], Any]:
    """A kind's hook that imports ``module`` (relative to ``package``, the kind's own) when
    first called, and gives the module or its ``attribute``: ``lazy(__name__, ".adapter")``,
    ``lazy(__name__, ".webhook", "INBOUND")``. Reading the config loads no kind's code."""

    def load() -> Any:
        loaded = importlib.import_module(module, package)
        return loaded if attribute is None else getattr(loaded, attribute)

    load.__qualname__ = f"lazy({module!r}, {attribute!r})"
    return load


class AdapterModule(Protocol):
    """What a kind's adapter module offers (``adapters/<kind>/adapter.py``)."""

    def parse_options(self, options: Mapping[str, Any]) -> object:
        """Validate the kind's own keys of ``[providers.NAME]`` (raises OptionError)."""

    def build(
        self,
        name: str,
        base_url: str,
        options: Mapping[str, Any],
        secret: str | None,
        timeout_s: float,
        batch_max_items: int | None,
    ) -> Provider:
        """The adapter of one configured provider of this kind."""

    def secret_values(self, secret: str | None) -> list[str]:
        """The values of the configured secret that travel in requests (a token, each user's
        token, a password): what is checked and redacted. Raises OptionError when the secret
        does not have the kind's shape (never quoting it)."""

    @property
    def SECRET_IN_HEADERS(self) -> bool:  # noqa: N802 -- a module constant
        """Whether those values travel in headers (so must be printable ASCII)."""


@dataclass(frozen=True, slots=True)
class KindSecret:
    """A secret of a kind's own, besides the provider's (``secret_env`` ...): a key that
    signs the provider's callbacks, a token in the path of its webhook.

    The config reads it from one of ``keys`` (an environment variable, a file, a systemd
    credential), like the provider's secret; it is checked by ``check-config`` and a reload,
    removed from everything the adapter says and from the log, and handed to the kind's
    inbound routes by ``name``.
    """

    name: str
    keys: tuple[str, str, str]  # its env var, file and credential keys, in that order
    in_url: bool = False  # it travels in a URL: printable ASCII, as a header's value
    listener_needs: str | None = None  # with a [listener], refused when missing: why


@dataclass(frozen=True, slots=True)
class EmulatorHook:
    """A kind's emulator in ``dropsync emulate`` and ``dropsync demo``.

    ``title`` and ``port`` are read without loading the emulator (``dropsync --help`` shows
    ``--<kind>-port``); ``part`` loads it with the kind's part of the demo
    (``adapters.emulators.demo.DemoPart``). The emulators are listed in the order of their
    ports.
    """

    title: str  # "the CRM": the help says "port of the CRM emulator"
    port: int  # its default port in `dropsync emulate`
    part: Callable[[], DemoPart]


@dataclass(frozen=True, slots=True)
class Kind:
    """What the daemon knows of a provider kind: its name, its modules, its optional hooks.

    Only ``name`` and ``adapter`` are required; every other hook has a default that means
    "this kind does not do that".
    """

    name: str
    adapter: Callable[[], AdapterModule]
    # The provider cannot work without its secret: what the secret is (a config without
    # one is refused at load, naming secret_env).
    secret_required: str | None = None
    secrets: tuple[KindSecret, ...] = ()
    # Collections whose records are requests a provider of this kind decides, given its
    # options: routed to it implicitly (``daemon.delivery.requests``).
    request_collections: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    # Whether a provider's accepted batches are confirmed later by a callback the listener
    # receives (then ``unconfirmed`` after confirm_timeout_s), given the names of the kind's
    # secrets it configures. Asked only when the config has a [listener].
    confirmed_by_callback: Callable[[Collection[str]], bool] | None = None
    # The routes the listener serves for this kind (``adapters.inbound``): its callbacks or
    # webhook, verified and read by the kind, applied by the daemon.
    inbound: Callable[[], Inbound] | None = None
    # Its loopback emulator, with the kind's part of `dropsync demo`.
    emulator: EmulatorHook | None = None
    # Given its options, what the secret is when the provider cannot work without one, for a
    # kind whose other options can stand in for it (a folder of tokens); else
    # ``secret_required`` says.
    secret_needed: Callable[[Mapping[str, Any]], str | None] | None = None
    # Given its options, whether a provider sends what is routed to it (a read-only one only
    # pulls: a collection routed to it is a config error). Default: it sends.
    sends: Callable[[Mapping[str, Any]], bool] | None = None
    # Options that are paths: relative ones are resolved as every path of the config is.
    path_options: tuple[str, ...] = ()

    def confirms(self, secrets: Collection[str]) -> bool:
        """Whether a provider of this kind with these secrets of its own is confirmed by a
        callback (the listener running)."""
        return self.confirmed_by_callback is not None and self.confirmed_by_callback(secrets)

    def requires_secret(self, options: Mapping[str, Any]) -> str | None:
        """What the secret is when a provider with these options cannot work without one."""
        if self.secret_needed is not None:
            return self.secret_needed(options)
        return self.secret_required

    def pushes(self, options: Mapping[str, Any]) -> bool:
        """Whether a provider with these options sends what is routed to it."""
        return self.sends is None or self.sends(options)


def _churn() -> Kind:
    from .churn import KIND

    return KIND


def _crm() -> Kind:
    from .crm import KIND

    return KIND


def _favourites() -> Kind:
    from .favourites import KIND

    return KIND


def _registrations() -> Kind:
    from .registrations import KIND

    return KIND


_LOADERS: dict[str, Callable[[], Kind]] = {
    "churn": _churn,
    "crm": _crm,
    "favourites": _favourites,
    "registrations": _registrations,
}

KINDS: tuple[str, ...] = tuple(sorted(_LOADERS))


def get_kind(name: str) -> Kind:
    """The kind called ``name`` (OptionError naming ``kind`` if this version has none)."""
    if name not in _LOADERS:
        raise OptionError(
            "kind",
            f"provider kind {name!r} is not available in this version "
            f"(available: {', '.join(KINDS)})",
        )
    return _LOADERS[name]()


def every_kind() -> list[Kind]:
    """Every kind, in the order of ``KINDS``."""
    return [get_kind(name) for name in KINDS]


def emulated() -> list[tuple[str, EmulatorHook]]:
    """(kind, its emulator) of every kind that has one, in the order of their ports."""
    found = [(kind.name, kind.emulator) for kind in every_kind() if kind.emulator is not None]
    return sorted(found, key=lambda pair: pair[1].port)


def parse_options(kind_name: str, options: Mapping[str, Any]) -> object:
    """Validate the options of ``kind_name`` (raises OptionError naming the key)."""
    return get_kind(kind_name).adapter().parse_options(options)


def secret_values(kind_name: str, secret: str | None) -> list[str]:
    """The secret's values that go into requests (raises OptionError; never quotes them)."""
    return get_kind(kind_name).adapter().secret_values(secret)


def secret_in_headers(kind_name: str) -> bool:
    """Whether ``kind_name`` sends its secret's values in headers (so they must be ASCII)."""
    return get_kind(kind_name).adapter().SECRET_IN_HEADERS


def build_provider(
    *,
    name: str,
    kind: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
    also_secret: Iterable[str] = (),
) -> Provider:
    """The adapter for one configured provider.

    ``also_secret``: values of the provider's other secrets (a callback key, a webhook
    token that rides in a URL it sends), which the adapter must never say either.
    """
    from .http import HttpAdapter

    module = get_kind(kind).adapter()
    module.parse_options(options)
    adapter = module.build(name, base_url, options, secret, timeout_s, batch_max_items)
    if isinstance(adapter, HttpAdapter):
        adapter.keep_secret(also_secret)
    return adapter
