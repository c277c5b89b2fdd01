"""Favourites tokens (issue 21, part 1): one file per user in tokens_dir, the secret's JSON
object read again, what is ignored and what is a problem (never quoting a token), and the
header that carries a token (auth_header, auth_scheme) against the emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from dropsync.adapters.emulators.common import EmulatorServer
from dropsync.adapters.errors import AuthError
from dropsync.adapters.favourites import KIND
from dropsync.adapters.favourites.adapter import FavouritesProvider, build
from dropsync.adapters.favourites.adapter import parse_options as favourite_options
from dropsync.adapters.favourites.emulator import FavouritesEmulator
from dropsync.adapters.favourites.tokens import TokenFolder
from dropsync.adapters.options import OptionError

pytestmark = pytest.mark.anyio


def folder_of(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "tokens"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        path = os.path.join(os.fsencode(folder), os.fsencode(name))
        with open(path, "wb") as handle:
            handle.write(content)
    return folder


def test_a_file_per_user_names_and_contents_that_are_no_token(tmp_path: Path) -> None:
    folder = folder_of(
        tmp_path,
        {
            "alice": b"tok-alice-1\n",
            "bob smith": b"  tok-bob-1  ",
            ".carol": b"tok-hidden-1",
            "dave.tmp": b"tok-temp-1",
            "erin.part": b"tok-part-1",
            "frank~": b"tok-backup-1",
            "grace": b"",
            "heidi": b"tok-heidi-Q7\nZ9-rest",
            "ivan": b"\xff\xfe not text",
            "judy": b"t" * (64 * 1024 + 1),
            "mallory": "tok-ünïcode".encode(),
            "bad\udcffname": b"tok-bad-name-1",
            "ctl\x01name": b"tok-ctl-name-1",
        },
    )
    (folder / "sub").mkdir()
    (folder / "linked").symlink_to(folder / "alice")
    (folder / "dangling").symlink_to(folder / "nowhere")
    tokens = TokenFolder(folder)
    problems = dict(tokens.read())
    assert tokens.tokens == {
        "alice": "tok-alice-1",
        "bob smith": "tok-bob-1",
        "linked": "tok-alice-1",
    }
    assert sorted(Path(p).name for p in problems) == sorted(
        ["grace", "heidi", "ivan", "judy", "mallory", "bad\udcffname", "ctl\x01name"]
    )
    text = " ".join(problems.values())
    for secret in ("tok-heidi-Q7", "Z9-rest", "not text", "ünïcode", "tok-bad-name-1", "tttt"):
        assert secret not in text
    assert "empty" in problems[str(folder / "grace")]
    assert "not UTF-8" in problems[str(folder / "bad\udcffname")]


def test_a_file_that_cannot_be_read_keeps_the_users_previous_token(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {"alice": b"tok-alice-1", "bob": b"tok-bob-1"})
    tokens = TokenFolder(folder)
    assert tokens.read() == []
    (folder / "alice").write_bytes(b"")  # being written, say
    (folder / "bob").unlink()
    problems = tokens.read()
    assert [Path(p).name for p, _ in problems] == ["alice"]
    assert tokens.tokens == {"alice": "tok-alice-1"}  # alice kept; bob signed out
    (folder / "alice").write_bytes(b"tok-alice-2")
    assert tokens.read(["alice"]) == [] and tokens.tokens == {"alice": "tok-alice-2"}
    os.rename(folder, tmp_path / "moved")
    problems = tokens.read()
    assert "does not exist" in problems[0][1] and tokens.tokens == {"alice": "tok-alice-2"}


def test_reading_again_says_which_users_changed_and_which_are_gone(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {"alice": b"tok-alice-1"})
    options = favourite_options({"tokens_dir": str(folder)})
    secret = orjson.dumps({"bob": "tok-bob-1", "alice": "tok-alice-0"}).decode()
    provider = build("fav", "http://127.0.0.1:9", {"tokens_dir": str(folder)}, secret, 5, None)
    assert provider.tokens == {"alice": "tok-alice-1", "bob": "tok-bob-1"}  # the folder wins
    (folder / "carol").write_bytes(b"tok-carol-1")
    update = provider.reload_credentials(
        orjson.dumps({"bob": "tok-bob-2"}).decode(), secret_read=True
    )
    assert (update.changed, update.gone, update.problems) == (
        frozenset({"bob", "carol"}),
        frozenset(),
        (),
    )
    assert set(update.values) == {"tok-alice-1", "tok-bob-2", "tok-carol-1"}
    assert provider.redact("said tok-carol-1 and tok-bob-2") == "said [redacted] and [redacted]"
    # A secret cut short: a problem, the tokens read from it before stay.
    update = provider.reload_credentials('{"bob": "tok-bo', secret_read=True)
    assert update.problems and update.problems[0][0] is None
    assert "tok-bo" not in update.problems[0][1] and provider.tokens["bob"] == "tok-bob-2"
    update = provider.reload_credentials(
        orjson.dumps({"bob": "tok-bob\n3"}).decode(), secret_read=True
    )
    assert update.problems and provider.tokens["bob"] == "tok-bob-2"
    (folder / "alice").unlink()
    update = provider.reload_credentials(None, secret_read=False)
    assert (update.changed, update.gone) == (frozenset(), frozenset({"alice"}))
    assert options.tokens_dir == folder


def test_the_options_say_whether_a_secret_is_needed_and_whether_it_pushes() -> None:
    assert KIND.requires_secret({}) is not None
    assert KIND.requires_secret({"tokens_dir": "t"}) is None
    assert KIND.pushes({}) and not KIND.pushes({"read_only": True})
    with pytest.raises(OptionError, match="tokens"):
        build("fav", "http://127.0.0.1:9", {}, None, 5, None)
    for bad in ({"auth_header": "X Token"}, {"auth_scheme": "Bearer token"}, {"auth_scheme": 1}):
        with pytest.raises(OptionError):
            favourite_options(bad)
    assert favourite_options({"auth_scheme": ""}).auth_scheme == ""


@pytest.fixture
def bare_token_server() -> Iterator[EmulatorServer]:
    emulator = FavouritesEmulator({"tok-alice-1": "alice"}, header="X-User-Token", scheme="")
    emulator.seed("alice", [{"item": "s1", "action": "ADD", "actionDate": "2024-01-01T00:00:00Z"}])
    with EmulatorServer(emulator) as server:
        yield server


async def test_auth_header_and_an_empty_auth_scheme_send_the_bare_token(
    bare_token_server: EmulatorServer,
) -> None:
    url = bare_token_server.base_url
    options = favourite_options({"auth_header": "X-User-Token", "auth_scheme": ""})
    async with FavouritesProvider("fav", url, options, {"alice": "tok-alice-1"}, 5, None) as fav:
        page = await fav.pull_lane("alice")
    assert [c.key for c in page.changes] == ["alice:s1"]
    # The default (Authorization: Bearer ...) is refused by this provider.
    default = favourite_options({})
    async with FavouritesProvider("fav", url, default, {"alice": "tok-alice-1"}, 5, None) as fav:
        with pytest.raises(AuthError) as refused:
            await fav.pull_lane("alice")
    assert "tok-alice-1" not in str(refused.value)
