"""Credentials that change while the daemon runs (``adapters.base.LiveCredentials``).

The app that signs users in writes their tokens where the daemon reads them: the
provider's ``secret_file`` (replaced by an atomic rename) and the folders the adapter names
(a folder of one token file per user, say). A ``CredentialWatch`` per such provider watches
them with watchfiles (the folder of a file: a rename replaces the file, and a watch on the
file itself would follow the old one) and hands each change to the adapter at once:

* every new value is added to the redaction of every log line (``redact_in_logs``) and of
  what ends a command, before anything can say it;
* lanes with new credentials are tried again at once, lanes whose credentials are gone
  wait (``daemon.delivery.lanes``);
* a source that cannot be read or parsed is a warning (``credentials_unreadable``) naming
  the file, never its content; the credentials read before stay in use. Said once, until
  it changes.

The watch sees a change within a fraction of a second; everything is read again once each
watch is on (a change made while it was starting). Besides, the roots are looked at
every second (a folder removed, made again or appearing: the watch starts again), and
everything is read again every ``RELOAD_S`` seconds (a change a watch could not see, on a
network file system say). A watch that fails (a name that is not UTF-8, no inotify
left) is started again after a second, everything read again.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import structlog
import watchfiles
from dropsync.adapters.base import CredentialUpdate, LiveCredentials

from ..config import ProviderConfig
from ..errors import SecretError
from .secrets import read_secret

log = structlog.get_logger(__name__)

TICK_S = 1.0  # how often the roots are looked at (and the watch started again, if need be)
RELOAD_S = 30.0  # everything is read again this often, changed or not


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


class CredentialWatch:
    """Watches one provider's credential sources; ``changed`` gets each update."""

    def __init__(
        self,
        config: ProviderConfig,
        provider: LiveCredentials,
        changed: Callable[[CredentialUpdate], Awaitable[None]],
    ) -> None:
        self.config = config
        self.provider = provider
        self.changed = changed
        secret = config.secret
        self.secret_file = secret.file if secret is not None and secret.file else None
        self.folders = [Path(p) for p in provider.credential_paths()]
        self._said: dict[str, str] = {}  # source -> the problem said about it

    def sources(self) -> list[Path]:
        """What is watched: the secret file (if any) and the adapter's folders."""
        return [*([self.secret_file] if self.secret_file else []), *self.folders]

    def _roots(self) -> dict[Path, tuple[int, int] | None]:
        """The folders to watch, with their identity (None: not there now)."""
        roots = [*([self.secret_file.parent] if self.secret_file else []), *self.folders]
        return {root: _identity(root) for root in dict.fromkeys(roots)}

    def _relevant(self, path: Path) -> bool:
        secret = self.secret_file
        # The file itself, or the ..data link a Kubernetes secret volume swaps.
        if (
            secret is not None
            and path.parent == secret.parent
            and (path.name == secret.name or path.name.startswith(".."))
        ):
            return True
        return path.parent in self.folders or path in self.folders

    async def reload(self, paths: Sequence[Path] | None = None) -> None:
        """Read the credentials again (``paths``: only these entries of the folders changed)
        and hand the update on; never raises for what it reads."""
        secret: str | None = None
        secret_read = False
        problems: list[tuple[str, str]] = []
        if self.secret_file is not None and self.config.secret is not None and paths is None:
            try:
                secret = read_secret(self.config.secret, self.config.name)
                secret_read = True
            except SecretError as exc:
                problems.append((str(self.secret_file), f"{exc}; the tokens read before stay"))
        try:
            update = self.provider.reload_credentials(secret, secret_read=secret_read, paths=paths)
        except Exception as exc:  # the adapter's own failure: the tokens in use stay
            log.error(
                "credentials_reload_failed",
                provider=self.config.name,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        where = (
            str(self.secret_file)
            if self.secret_file
            else (self.config.secret.describe() if self.config.secret else "the secret")
        )
        for source, problem in update.problems:
            problems.append((source if source is not None else where, problem))
        await self.changed(update)  # first: the new values are redacted from here on
        self._say(problems, full=paths is None)

    def _say(self, problems: list[tuple[str, str]], *, full: bool) -> None:
        current = dict(problems)
        for source, problem in current.items():
            if self._said.get(source) != problem:
                log.warning(
                    "credentials_unreadable",
                    provider=self.config.name,
                    file=source,
                    error=problem,
                )
        self._said = current if full else {**self._said, **current}

    async def run(self) -> None:
        """Read now, then watch until cancelled."""
        await self.reload()
        failures = 0
        while True:
            roots = self._roots()
            watched = [root for root, identity in roots.items() if identity is not None]
            try:
                await self._watch(watched, roots)
                failures = 0
            except Exception as exc:  # the watcher's own failure: started again, all read
                failures += 1
                if failures == 1:
                    log.warning(
                        "credentials_watch_restarted",
                        provider=self.config.name,
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=TICK_S,
                    )
                await anyio.sleep(TICK_S)
            await self.reload()

    async def _watch(self, watched: list[Path], roots: dict[Path, tuple[int, int] | None]) -> None:
        """Hand on changes until a root changes (returns) or everything is due again."""
        due = anyio.current_time() + RELOAD_S
        if not watched:  # nothing to watch yet: look again each second
            for _ in range(int(RELOAD_S / TICK_S)):
                await anyio.sleep(TICK_S)
                if self._roots() != roots:
                    return
            return
        stop = anyio.Event()
        caught_up = False
        async for changes in watchfiles.awatch(
            *watched,
            debounce=50,
            step=50,
            rust_timeout=int(TICK_S * 1000),
            yield_on_timeout=True,
            recursive=False,
            ignore_permission_denied=True,
            stop_event=stop,
        ):
            paths = [Path(name) for _, name in changes]
            relevant = [path for path in paths if self._relevant(path)]
            if not caught_up:
                # The watch is on by its first answer (at the latest after rust_timeout):
                # what changed between the last read and its start (a token renamed in
                # during the second a failed watch waits) is read now, not RELOAD_S later.
                caught_up = True
                await self.reload()
            elif relevant:
                secret_changed = self.secret_file is not None and any(
                    path.parent == self.secret_file.parent for path in relevant
                )
                folder_paths = [path for path in relevant if path.parent in self.folders]
                # A secret volume swaps its ..data link: every user's link now leads elsewhere.
                swapped = any(path.name.startswith("..") for path in folder_paths)
                if secret_changed or swapped or len(folder_paths) != len(relevant):
                    await self.reload()
                else:
                    await self.reload(folder_paths)
            if self._roots() != roots or anyio.current_time() >= due:
                stop.set()
                return
