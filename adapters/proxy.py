"""The proxy the service's environment names for a provider, as httpx reads it.

The adapters' clients keep httpx's ``trust_env``: an operator who sets ``HTTPS_PROXY`` in the
service's environment means the daemon to use it, as curl and every other client there does.
A request goes through the proxy that ``http_proxy`` / ``https_proxy`` (by the URL's scheme)
or else ``all_proxy`` names, unless ``no_proxy`` names its host (``*``: no proxy at all).
Each may be written in upper or lower case; the lower-case one wins, and a lower-case one set
empty unsets its upper-case twin (Python's ``urllib`` rule, which httpx reads).

This module names that proxy (``through``), so a request that fails on the way says which
proxy and which variable it went through, and checks the variables before a client is built
(``proxy_problem``): httpx builds a transport for each of them at once and raises for one it
cannot use (``socks5://`` without the ``socksio`` package, ``ftp://``), which would end the
daemon; the providers pause with the reason instead. A proxy is always said without its user
and password, and its credentials are secrets of every adapter (``proxy_secrets``).
"""

from __future__ import annotations

import base64
import importlib.util
import os
from collections.abc import Mapping

import httpx

SCHEMES = ("http", "https", "all")  # the variables httpx reads: <scheme>_proxy
USABLE = ("http", "https")  # proxy schemes httpx speaks without extra packages
SOCKS = ("socks5", "socks5h")  # with the socksio package


def proxy_variables(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Per scheme (``http``, ``https``, ``all``): the variable in effect and its value."""
    environ = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}
    for scheme in SCHEMES:
        lower, upper = f"{scheme}_proxy", f"{scheme}_proxy".upper()
        if lower in environ:
            if environ[lower]:
                found[scheme] = (lower, environ[lower])
        elif environ.get(upper):
            found[scheme] = (upper, environ[upper])
    return found


def shown(proxy: str) -> str:
    """The proxy's address without its user and password (``scheme://host:port``)."""
    text = proxy if "://" in proxy else f"http://{proxy}"
    scheme, _, rest = text.partition("://")
    rest = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{rest}"


def proxy_problem(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The first proxy variable httpx cannot use and why, or None (never quotes a password)."""
    for variable, value in proxy_variables(environ).values():
        scheme = value.partition("://")[0].lower() if "://" in value else "http"
        if scheme in USABLE:
            continue
        if scheme in SOCKS:
            if importlib.util.find_spec("socksio") is not None:
                continue
            why = "a SOCKS proxy needs the socksio package (pip install 'httpx[socks]')"
        else:
            why = f"{scheme}:// is not a proxy scheme httpx speaks (http, https, socks5)"
        return variable, (
            f"set to {shown(value)} in the service's environment, which cannot be used: "
            f"{why}; correct or unset it and restart the daemon"
        )
    return None


def proxy_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The credentials of the proxies the environment names, as a request carries them (the
    password, ``user:password`` and its ``Proxy-Authorization: Basic`` form): a proxy's
    error page may quote them, and no text an adapter lets out may."""
    found: list[str] = []
    for _, value in proxy_variables(environ).values():
        try:
            url = httpx.URL(value if "://" in value else f"http://{value}")
        except Exception:  # not a URL: httpx will not send it either
            continue
        if not url.password:
            continue
        pair = f"{url.username}:{url.password}"
        found += [url.password, pair, base64.b64encode(pair.encode()).decode()]
    return found


def through(url: httpx.URL | str) -> str | None:
    """``the proxy http://host:port (HTTPS_PROXY)`` a request to ``url`` goes through, or
    None when it goes directly (as httpx chooses: ``no_proxy`` first, then the scheme's
    variable, then ``all_proxy``)."""
    target = httpx.URL(url)
    host = (target.host or "").lower()
    variables = proxy_variables()
    chosen = variables.get(target.scheme) or variables.get("all")
    if chosen is None or _bypassed(host, target.port):
        return None
    variable, value = chosen
    return f"the proxy {shown(value)} ({variable})"


def _bypassed(host: str, port: int | None) -> bool:
    """Whether ``no_proxy`` keeps ``host`` off the proxies (httpx's reading of it: ``*``,
    a host or address, ``.domain`` for its sub-domains, ``domain`` for it and them)."""
    for variable in ("no_proxy", "NO_PROXY"):
        if variable in os.environ:
            names = os.environ[variable]
            break
    else:
        return False
    for written in (n.strip().lower() for n in names.split(",")):
        if not written:
            continue
        if written == "*":
            return True
        entry = written.split("://", 1)[-1]
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.strip("[]")
        if host == name or (name.startswith(".") and host.endswith(name)):
            return True
        if not name.startswith(".") and host.endswith(name) and not _is_address(name):
            return True  # httpx reads "example.com" as "*example.com"
    return False


def _is_address(name: str) -> bool:
    return name.replace(".", "").isdigit() or ":" in name
