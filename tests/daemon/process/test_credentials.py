"""Tokens without a reload (issue 21, part 1): the daemon's watch on a favourites provider's
secret_file (replaced by an atomic rename) and tokens_dir hands each change over, says what it
cannot read (naming the file, never the token) and keeps the tokens read before."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from dropsync.adapters.base import CredentialUpdate
from dropsync.adapters.favourites.adapter import FavouritesProvider, build
from dropsync.daemon.config import ProviderConfig, SecretRef
from dropsync.daemon.process.credentials import CredentialWatch
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio


class Watched:
    """A running watch and the updates it handed over."""

    def __init__(self, watch: CredentialWatch, provider: FavouritesProvider) -> None:
        self.watch = watch
        self.provider = provider
        self.updates: list[CredentialUpdate] = []

    async def changed(self, update: CredentialUpdate) -> None:
        self.updates.append(update)

    async def until(self, what: str, condition: object) -> None:
        with anyio.fail_after(20, shield=False):
            while not (condition() if callable(condition) else condition):  # noqa: ASYNC110
                await anyio.sleep(0.02)


def replace(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename it into place (as the app does)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    secret = tmp_path / "conf" / "tokens.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"alice": "tok-alice-1"}))
    folder = tmp_path / "tokens"
    folder.mkdir()
    options = {"tokens_dir": str(folder)}
    provider = build("fav", "http://127.0.0.1:9", options, secret.read_text(), 5, None)
    config = ProviderConfig(
        name="fav",
        kind="favourites",
        base_url="http://127.0.0.1:9",
        secret=SecretRef(file=secret),
        options=options,
    )
    holder: list[Watched] = []

    async def changed(update: CredentialUpdate) -> None:
        await holder[0].changed(update)

    watch = CredentialWatch(config, provider, changed)
    holder.append(Watched(watch, provider))
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        await holder[0].until("the first read", lambda: holder[0].updates)
        yield holder[0]
        tg.cancel_scope.cancel()


def changed_lanes(watched: Watched) -> set[str]:
    return {lane for update in watched.updates for lane in update.changed}


async def test_a_new_file_in_tokens_dir_and_a_renamed_secret_file_are_taken_at_once(
    watched: Watched, tmp_path: Path
) -> None:
    replace(tmp_path / "tokens" / "carol", "tok-carol-1\n")
    await watched.until("carol", lambda: "carol" in changed_lanes(watched))
    assert watched.provider.tokens["carol"] == "tok-carol-1"
    replace(tmp_path / "conf" / "tokens.json", json.dumps({"alice": "tok-alice-2", "bob": "tok-b"}))
    await watched.until("bob", lambda: {"alice", "bob"} <= changed_lanes(watched))
    assert watched.provider.tokens == {
        "alice": "tok-alice-2",
        "bob": "tok-b",
        "carol": "tok-carol-1",
    }
    (tmp_path / "tokens" / "carol").unlink()
    await watched.until("carol gone", lambda: any("carol" in u.gone for u in watched.updates))
    assert "carol" not in watched.provider.lanes()


async def test_what_cannot_be_read_is_said_once_naming_the_file_and_the_old_tokens_stay(
    watched: Watched, tmp_path: Path
) -> None:
    secret = tmp_path / "conf" / "tokens.json"
    with capture_logs() as logs:
        replace(secret, '{"alice": "tok-alice-SECRET-2')  # cut short
        replace(tmp_path / "tokens" / "dave", "tok-dave-SECRET\nsecond line")

        def said() -> list[MutableMapping[str, Any]]:
            return [e for e in logs if e["event"] == "credentials_unreadable"]

        await watched.until("both said", lambda: len({e["file"] for e in said()}) == 2)
        replace(tmp_path / "tokens" / "erin", "tok-erin-1")  # another change, read again
        await watched.until("erin", lambda: "erin" in changed_lanes(watched))
    assert {e["file"] for e in said()} == {str(secret), str(tmp_path / "tokens" / "dave")}
    assert len(said()) == 2  # said once, not at every reading
    assert "SECRET" not in repr(logs)
    assert (
        watched.provider.tokens["alice"] == "tok-alice-1" and "dave" not in watched.provider.tokens
    )


async def test_a_tokens_dir_made_again_or_made_late_is_watched(
    watched: Watched, tmp_path: Path
) -> None:
    folder = tmp_path / "tokens"
    folder.rename(tmp_path / "old-tokens")
    await anyio.sleep(0.1)
    folder.mkdir()
    (folder / "frank").write_text("tok-frank-1")
    await watched.until("frank", lambda: "frank" in changed_lanes(watched))
    assert watched.provider.tokens["frank"] == "tok-frank-1"


async def test_a_secret_file_that_is_not_utf8_is_said_and_the_watch_goes_on(
    watched: Watched, tmp_path: Path
) -> None:
    secret = tmp_path / "conf" / "tokens.json"
    with capture_logs() as logs:
        temporary = secret.with_name(".tokens.json.tmp")
        temporary.write_bytes(b'\xff\xfe{"alice": "tok-alice-BINARY"}')
        os.replace(temporary, secret)
        await watched.until(
            "said", lambda: any(e["event"] == "credentials_unreadable" for e in logs)
        )
        replace(tmp_path / "tokens" / "grace", "tok-grace-1")
        await watched.until("grace", lambda: "grace" in changed_lanes(watched))
    (said,) = [e for e in logs if e["event"] == "credentials_unreadable"]
    assert said["file"] == str(secret) and "UTF-8" in str(said["error"])
    assert watched.provider.tokens["alice"] == "tok-alice-1"


async def test_a_secret_volume_that_swaps_its_data_link_is_read_again(
    watched: Watched, tmp_path: Path
) -> None:
    # A Kubernetes secret volume: each user a link through ..data, which is swapped whole.
    folder = tmp_path / "tokens"
    first = folder / "..2026_01_01"
    first.mkdir()
    (first / "heidi").write_text("tok-heidi-1")
    (folder / "..data").symlink_to(first.name)
    (folder / "heidi").symlink_to("..data/heidi")
    await watched.until("heidi", lambda: watched.provider.tokens.get("heidi") == "tok-heidi-1")
    second = folder / "..2026_01_02"
    second.mkdir()
    (second / "heidi").write_text("tok-heidi-2")
    (folder / "..data_tmp").symlink_to(second.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    await watched.until(
        "heidi's new token", lambda: watched.provider.tokens["heidi"] == "tok-heidi-2"
    )
