"""The event-app favourites adapter (seed 000): two-way, one lane per user.

"The synchronisation is based on the fact that a user has successfully signed in and the
3rd party supplier has returned a valid user token": each user has a token of their own
(``adapters.favourites.tokens``: the provider's secret, a JSON object user -> token, and
``tokens_dir``, one file per user; both read again when they change). Each user is a lane
(``adapters.base.Laned``): the engine sends one user's items per request and pulls user by
user, so a token the provider refuses pauses that user alone.

Records are keyed ``user:item`` with bodies ``{user, item, action, actionDate}``
(actionDate GMT ISO-8601 with milliseconds); ``action: DELETE`` is a delete. A push is one
``POST /postUserFavorites`` per user; a pull reads ``GET /getUserFavorites`` for a user
(the API has no "since" parameter, so each pull returns everything and the LWW merge
keeps only what is newer). The token travels as ``<auth_header>: <auth_scheme> <token>``
(default ``Authorization: Bearer <token>``; an empty ``auth_scheme`` sends the bare token:
the document allows "some user identification mechanism" other than Bearer).

The document gives no answer body for either endpoint. Read as: a POST succeeded
on 200, 201, 202 or 204 with an empty or JSON body (a JSON object with a non-empty
``error`` member is a failure); a GET answers 200 with the JSON array of items.
Anything else (an HTML page, ``{}``, another status) is an ``UnexpectedAnswer``:
never a delivery, never "the user has no favourites".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..base import (
    IDEMPOTENCY_HEADER,
    CredentialUpdate,
    IncomingChange,
    OutgoingChange,
    ProviderLimits,
    PullPage,
    PushResult,
)
from ..errors import (
    AuthError,
    PermanentError,
    ProviderMisconfigured,
    UnexpectedAnswer,
)
from ..http import Answer, HttpAdapter, json_body
from ..options import OptionError, OptionReader
from .tokens import (
    TokenFolder,
    parse_tokens,
    secret_problem,
)

POST_SUCCESS = (200, 201, 202, 204)
MAX_LIST_MB = 8  # one user's list is read up to this (max_list_mb)
# RFC 9110 token characters: what a header's name (and an auth scheme) may hold.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class FavouritesOptions:
    """The favourites kind's own config keys."""

    collection: str = "favourites"
    read_only: bool = False
    users: tuple[str, ...] = ()
    max_list_bytes: int = MAX_LIST_MB << 20
    tokens_dir: Path | None = None
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"


def parse_options(options: Mapping[str, Any]) -> FavouritesOptions:
    """Validate ``[providers.NAME]`` keys of kind favourites."""
    read = OptionReader(options)
    tokens_dir = read.string("tokens_dir")
    auth_header = read.string("auth_header") or "Authorization"
    if not _TOKEN.fullmatch(auth_header):
        raise OptionError("auth_header", "expected a header name (letters, digits, '-')")
    read.used.add("auth_scheme")
    auth_scheme = options.get("auth_scheme", "Bearer")
    if not isinstance(auth_scheme, str) or (auth_scheme and not _TOKEN.fullmatch(auth_scheme)):
        raise OptionError(
            "auth_scheme",
            'expected one word (e.g. "Bearer", "Token"), or "" to send the bare token',
        )
    parsed = FavouritesOptions(
        collection=read.string("collection") or "favourites",
        read_only=read.boolean("read_only"),
        users=read.strings("users"),
        max_list_bytes=read.integer("max_list_mb", MAX_LIST_MB, minimum=1, maximum=1024) << 20,
        tokens_dir=Path(tokens_dir) if tokens_dir else None,
        auth_header=auth_header,
        auth_scheme=auth_scheme,
    )
    read.reject_unknown()
    return parsed


# The secret's values travel in headers (and so must be printable ASCII).
SECRET_IN_HEADERS = True


def secret_values(secret: str | None) -> list[str]:
    """The values of the secret that travel in requests: each user's token (none without a
    secret: the tokens then come from ``tokens_dir``)."""
    return list(parse_tokens(secret, required=False).values())


def posted(answer: Answer) -> None:
    """Check a POST /postUserFavorites answer (see the module docstring)."""
    if answer.status not in POST_SUCCESS:
        raise ValueError(f"a post answers 200, 201, 202 or 204 on success, not {answer.status}")
    if answer.status == 204 or not answer.body.strip():
        return
    reply = json_body(answer)
    if isinstance(reply, dict) and reply.get("error"):
        raise ValueError("the answer reports an error")


def item_list(answer: Answer) -> list[Any]:
    """The items of a GET /getUserFavorites answer: 200 with a JSON array."""
    if answer.status != 200:
        raise ValueError(f"the list answers 200, not {answer.status}")
    items = json_body(answer)
    if not isinstance(items, list):
        raise ValueError("the body is not a JSON array of items")
    return items


def read_item(user: str, item: Any) -> tuple[str, int, bool, dict[str, Any]] | None:
    """(name, actionDate ms, deleted, body) of one listed item; None if it is not one."""
    if not isinstance(item, dict):
        return None
    name, action, date = item.get("item"), item.get("action"), item.get("actionDate")
    if isinstance(name, bool) or not isinstance(name, str | int) or str(name) == "":
        return None
    if action not in ("ADD", "DELETE") or not isinstance(date, str):
        return None
    try:
        when = to_ms(date)
    except (ValueError, OverflowError):
        return None
    body = {"user": user, "item": str(name), "action": action, "actionDate": date}
    return str(name), when, action == "DELETE", body


def to_ms(value: str) -> int:
    """GMT ISO-8601 to epoch ms."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000 + 0.5)


def to_action_date(ms: int) -> str:
    """Epoch ms to GMT ISO-8601 with milliseconds, as in the document."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class FavouritesProvider(HttpAdapter):
    """Syncs favourites both ways, one request per user; each user is a lane."""

    def __init__(
        self,
        name: str,
        base_url: str,
        options: FavouritesOptions,
        tokens: dict[str, str],
        timeout_s: float,
        batch_max_items: int | None,
    ) -> None:
        self.name = name
        self.options = options
        self.secret_tokens = dict(tokens)
        self.folder = TokenFolder(options.tokens_dir) if options.tokens_dir else None
        if self.folder is not None:
            self.folder.read()  # what cannot be read is said by the daemon's first reload
        self.tokens = self._merged()
        self.limits = ProviderLimits(
            max_items=min(batch_max_items or 1000, 1000),
            can_push=not options.read_only,
            can_pull=True,
        )
        super().__init__(
            base_url,
            timeout_s,
            secrets=self.tokens.values(),
            headers={"Accept": "application/json"},
        )

    def _merged(self) -> dict[str, str]:
        folder = self.folder.tokens if self.folder is not None else {}
        return {**self.secret_tokens, **folder}

    @staticmethod
    def user_of(change: OutgoingChange) -> str:
        """The record's user: the body's ``user``, else the key before the first ':'."""
        body = change.body or {}
        user = body.get("user")
        return str(user) if user else change.key.split(":", 1)[0]

    # -- lanes (adapters.base.Laned) ------------------------------------------------------

    def lanes(self) -> Sequence[str]:
        """The users that have a token now."""
        return tuple(self.tokens)

    def pull_lanes(self) -> Sequence[str]:
        """The users pulled: ``users`` when set (those with a token), else every user."""
        if self.options.users:
            return tuple(u for u in self.options.users if u in self.tokens)
        return tuple(self.tokens)

    def lane_of(self, change: OutgoingChange) -> str:
        """An entry's lane is its user."""
        return self.user_of(change)

    # -- credentials (adapters.base.LiveCredentials) --------------------------------------

    def credential_paths(self) -> Sequence[Path]:
        """``tokens_dir``, when set."""
        return () if self.options.tokens_dir is None else (self.options.tokens_dir,)

    def reload_credentials(
        self, secret: str | None, *, secret_read: bool, paths: Sequence[Path] | None = None
    ) -> CredentialUpdate:
        """Read the tokens again (see ``adapters.favourites.tokens``): a source that cannot
        be read or parsed keeps its previous tokens."""
        problems: list[tuple[str | None, str]] = []
        if secret_read:
            try:
                tokens = parse_tokens(secret, required=self.folder is None)
                problem = secret_problem(tokens)
                if problem is not None:
                    raise OptionError("secret_env", problem)
            except OptionError as exc:
                problems.append((None, f"{exc.problem}; the tokens read before stay in use"))
            else:
                self.secret_tokens = tokens
        if self.folder is not None:
            folder = self.folder.folder
            exact = paths is not None and all(p.parent == folder for p in paths)
            names = [p.name for p in paths] if paths is not None and exact else None
            problems.extend(self.folder.read(names))
        new = self._merged()
        changed = frozenset(user for user, token in new.items() if self.tokens.get(user) != token)
        gone = frozenset(set(self.tokens) - set(new))
        self.keep_secret(new[user] for user in changed)  # before anything can say them
        self.tokens = new
        return CredentialUpdate(tuple(new.values()), changed, gone, tuple(problems))

    # -- requests -------------------------------------------------------------------------

    def _check(self, change: OutgoingChange) -> str | None:
        """A user and an item to name (a user without a token waits for one: its lane)."""
        body = change.body or {}
        if not self.user_of(change):
            return "favourite has no user"
        if not body.get("item") and ":" not in change.key:
            return "favourite has no item"
        return None

    def _auth(self, user: str) -> dict[str, str]:
        token = self.tokens.get(user)
        if token is None:
            # Its token was removed since the entry was taken: the user's lane waits.
            raise AuthError(f"user {user!r} has no token now")
        scheme = self.options.auth_scheme
        return {self.options.auth_header: f"{scheme} {token}" if scheme else token}

    async def probe(self) -> str:
        """One user's ``GET /getUserFavorites`` (the first of ``users`` with a token, else the
        first token's): it reads, changes nothing, and is refused without a valid token."""
        user = next((u for u in (*self.options.users, *self.tokens) if u in self.tokens), None)
        with self._boundary():
            if user is None:
                raise ProviderMisconfigured("no user has a token to ask with")
            await self.send("GET", "/getUserFavorites", expect=item_list, headers=self._auth(user))
        return f"GET /getUserFavorites as user {user}"

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """POST each user's items (the engine sends one user's per push)."""
        if self.options.read_only:
            raise PermanentError("provider is read-only", reason="provider is read-only")
        by_user: dict[str, list[dict[str, Any]]] = {}
        for change in batch:
            user = self.user_of(change)
            body = change.body or {}
            item = body.get("item") or change.key.split(":", 1)[1]
            by_user.setdefault(user, []).append(
                {
                    "item": item,
                    "action": "DELETE" if change.deleted else "ADD",
                    "actionDate": to_action_date(change.updated_at),
                }
            )
        for user, items in by_user.items():
            await self.send(
                "POST",
                "/postUserFavorites",
                expect=posted,
                content=orjson.dumps(items),
                headers={
                    **self._auth(user),
                    "Content-Type": "application/json",
                    IDEMPOTENCY_HEADER: f"{idempotency_key}:{user}",
                },
            )
        return PushResult(state="confirmed", status=200)

    async def pull_lane(self, lane: str) -> PullPage:
        """Every item of one user (see ``Laned.pull_lane``)."""
        with self._boundary():
            return await self._pull_user(lane)

    async def _pull(self, cursor: str | None) -> PullPage:
        """Every item of every user pulled (a refused token fails the whole pull: the
        engine pulls lane by lane instead)."""
        changes: list[IncomingChange] = []
        skipped = 0
        for user in self.pull_lanes():
            page = await self._pull_user(user)
            changes.extend(page.changes)
            skipped += page.skipped
        return PullPage(changes=changes, cursor=None, skipped=skipped)

    async def _pull_user(self, user: str) -> PullPage:
        """One user's list; unreadable items are skipped and counted."""
        items = await self.send(
            "GET",
            "/getUserFavorites",
            expect=item_list,
            headers=self._auth(user),
            max_bytes=self.options.max_list_bytes,
            cap="one user's list is read up to max_list_mb",
        )
        read = [read_item(user, item) for item in items]
        if items and not any(read):
            raise UnexpectedAnswer(
                f"GET /getUserFavorites: none of the {len(items)} items has the documented "
                "shape {item, action: ADD|DELETE, actionDate}",
                status=200,
            )
        changes: list[IncomingChange] = []
        skipped = 0
        for found in read:
            if found is None:
                skipped += 1
                continue
            name, when, deleted, body = found
            changes.append(
                IncomingChange(self.options.collection, f"{user}:{name}", when, deleted, body)
            )
        return PullPage(changes=changes, cursor=None, skipped=skipped)


def build(
    name: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
) -> FavouritesProvider:
    """The adapter for a ``kind = "favourites"`` provider."""
    parsed = parse_options(options)
    tokens = parse_tokens(secret, required=parsed.tokens_dir is None)
    return FavouritesProvider(name, base_url, parsed, tokens, timeout_s, batch_max_items)
