"""Where the favourites users' tokens come from, read again whenever they change.

Two sources, either or both:

* the provider's secret (``secret_env``, ``secret_file`` or ``credential``): a JSON object
  user -> token. A ``secret_file`` is read again when it changes (the app that signs users
  in replaces it by an atomic rename);
* ``tokens_dir``: a folder with one file per user, the file's name the user, its content
  the token (surrounding whitespace, a final line break included, is stripped). Ignored
  without a word: names starting with ``.`` (hidden and temporary files, the ``..data``
  links of a Kubernetes secret volume) or ending in ``.tmp``, ``.part`` or ``~``, and what
  is not a regular file (a folder; a link is followed). Said once as a warning and
  ignored: a name that is not UTF-8 or holds a control character. A file that cannot be
  read, is empty, larger than 64 KiB, not UTF-8, or holds a token no header can carry is
  a warning naming the file, never its content; that user's previous token stays in use.

A user in both sources takes the folder's token. Nothing here ever puts a token in a
message.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..http import header_problem
from ..options import OptionError

MAX_TOKEN_FILE = 64 << 10
IGNORED_SUFFIXES = (".tmp", ".part", "~")


def parse_tokens(secret: str | None, *, required: bool = True) -> dict[str, str]:
    """The user -> token map from the secret (errors never quote the secret).

    ``required``: a missing secret is an error (else an empty map: the tokens come from
    ``tokens_dir``).
    """
    if secret is None:
        if not required:
            return {}
        raise OptionError(
            "secret_env",
            "favourites needs the users' tokens: a secret holding a JSON object user -> token, "
            "or tokens_dir",
        )
    try:
        tokens = orjson.loads(secret)
    except orjson.JSONDecodeError:
        raise OptionError(
            "secret_env", "the secret is not a JSON object of user -> token"
        ) from None
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in tokens.items()
    ):
        raise OptionError("secret_env", "the secret must map each user (text) to a token (text)")
    return tokens


def secret_problem(tokens: dict[str, str]) -> str | None:
    """Why one of the secret's tokens could not travel in a header, or None."""
    for token in tokens.values():
        problem = header_problem(token)
        if problem is not None:
            return problem
    return None


def user_name_problem(name: str) -> str | None:
    """Why a file name cannot be a user's name, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "its name holds a control character"
    return None


def ignored(name: str) -> bool:
    """A name the folder holds that is no user's: hidden, temporary, a backup."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


Signature = tuple[int, int, int, int]  # device, inode, size, mtime (ns) of what a name shows


def _signature(info: os.stat_result) -> Signature:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _read_token(path: Path, info: os.stat_result) -> tuple[str | None, str | None]:
    """(token, None), (None, problem), or (None, None) when it is not a user's file (gone,
    a folder, something else)."""
    if not stat.S_ISREG(info.st_mode):
        return None, None
    if info.st_size > MAX_TOKEN_FILE:
        return None, f"larger than {MAX_TOKEN_FILE >> 10} KiB: not a token"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TOKEN_FILE + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or type(exc).__name__}"
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "its content is not UTF-8 text"
    if not token:
        return None, "it is empty"
    problem = header_problem(token)
    if problem is not None:
        return None, problem.replace("a secret value", "the token")
    return token, None


@dataclass(slots=True)
class TokenFolder:
    """The tokens of ``tokens_dir``, as last read (a file that cannot be read keeps its
    user's previous token).

    A whole read looks at each file (a ``stat``) and reads only those that changed since
    (another inode, size or modification time: a rename into place is always one), so the
    periodic read of a folder of thousands of users costs little; a file named as changed
    (``names``, from the watch) is always read.
    """

    folder: Path
    tokens: dict[str, str] = field(default_factory=dict)
    _seen: dict[str, tuple[Signature, str | None]] = field(default_factory=dict)

    def read(self, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Read the folder again (``names``: only these entries changed); returns (file,
        problem) of each file that could not be read."""
        if names is not None:
            return self._read_names(set(names), self.tokens, changed=True)
        try:
            listed = os.listdir(self.folder)
        except OSError as exc:
            reason = (
                "the folder does not exist"
                if isinstance(exc, FileNotFoundError)
                else f"the folder cannot be read: {exc.strerror or type(exc).__name__}"
            )
            return [(str(self.folder), f"{reason}; the tokens read before stay in use")]
        listed_set = set(listed)
        for name in [n for n in self._seen if n not in listed_set]:
            del self._seen[name]
        return self._read_names(listed_set, {}, changed=False)

    def _read_names(
        self, names: set[str], kept: dict[str, str], *, changed: bool
    ) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        found = dict(kept)
        for name in names:
            found.pop(name, None)
            if ignored(name):
                continue
            path = self.folder / name
            problem = user_name_problem(name)
            if problem is not None:
                problems.append((str(path), f"{problem}: not taken as a user"))
                continue
            try:
                info = os.stat(path)
            except OSError:
                self._seen.pop(name, None)
                continue  # removed since it was listed, or a dangling link
            seen = self._seen.get(name)
            if not changed and seen is not None and seen[0] == _signature(info):
                token, problem = self.tokens.get(name), seen[1]
            else:
                token, problem = _read_token(path, info)
                self._seen[name] = (_signature(info), problem)
            if problem is not None:
                problems.append((str(path), f"{problem}; the user's previous token stays in use"))
                token = self.tokens.get(name)
            if token is not None:
                found[name] = token
        self.tokens = found
        return problems
