"""The event-app favourites adapter (seed 000): two-way.

Each user has a bearer token: the provider's secret is a JSON object mapping
user -> token. Records are keyed ``user:item`` with bodies ``{user, item, action,
actionDate}`` (actionDate GMT ISO-8601 with milliseconds); ``action: DELETE`` is a
delete. ``push`` sends one ``POST /postUserFavorites`` per user; ``pull`` reads
``GET /getUserFavorites`` for every user (the API has no "since" parameter, so
each pull returns everything and the LWW merge keeps only what is newer).

The document gives no answer body for either endpoint. Read as: a POST succeeded
on 200, 201, 202 or 204 with an empty or JSON body (a JSON object with a non-empty
``error`` member is a failure); a GET answers 200 with the JSON array of items.
Anything else (an HTML page, ``{}``, another status) is an ``UnexpectedAnswer``:
never a delivery, never "the user has no favourites".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..base import (
    IDEMPOTENCY_HEADER,
    IncomingChange,
    OutgoingChange,
    ProviderLimits,
    PullPage,
    PushResult,
)
from ..errors import PermanentError, ProviderMisconfigured, UnexpectedAnswer
from ..http import Answer, HttpAdapter, json_body
from ..options import OptionError, OptionReader

POST_SUCCESS = (200, 201, 202, 204)
MAX_LIST_MB = 8  # one user's list is read up to this (max_list_mb)


@dataclass(frozen=True, slots=True)
class FavouritesOptions:
    """The favourites kind's own config keys."""

    collection: str = "favourites"
    read_only: bool = False
    users: tuple[str, ...] = ()
    max_list_bytes: int = MAX_LIST_MB << 20


def parse_options(options: Mapping[str, Any]) -> FavouritesOptions:
    """Validate ``[providers.NAME]`` keys of kind favourites."""
    read = OptionReader(options)
    parsed = FavouritesOptions(
        collection=read.string("collection") or "favourites",
        read_only=read.boolean("read_only"),
        users=read.strings("users"),
        max_list_bytes=read.integer("max_list_mb", MAX_LIST_MB, minimum=1, maximum=1024) << 20,
    )
    read.reject_unknown()
    return parsed


def parse_tokens(secret: str | None) -> dict[str, str]:
    """The user -> token map from the secret (errors never quote the secret)."""
    if secret is None:
        raise OptionError("secret_env", "favourites needs a secret: a JSON object user -> token")
    try:
        tokens = orjson.loads(secret)
    except orjson.JSONDecodeError:
        raise OptionError(
            "secret_env", "the secret is not a JSON object of user -> token"
        ) from None
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
    ):
        raise OptionError("secret_env", "the secret must map each user (text) to a token (text)")
    return tokens


# The secret's values travel in headers (and so must be printable ASCII).
SECRET_IN_HEADERS = True


def secret_values(secret: str | None) -> list[str]:
    """The values of the secret that travel in requests: each user's token."""
    return list(parse_tokens(secret).values())


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
    """Syncs favourites both ways, one request per user."""

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
        self.tokens = tokens
        self.limits = ProviderLimits(
            max_items=min(batch_max_items or 1000, 1000),
            can_push=not options.read_only,
            can_pull=True,
        )
        super().__init__(
            base_url,
            timeout_s,
            secrets=tokens.values(),
            headers={"Accept": "application/json"},
        )

    @staticmethod
    def user_of(change: OutgoingChange) -> str:
        """The record's user: the body's ``user``, else the key before the first ':'."""
        body = change.body or {}
        user = body.get("user")
        return str(user) if user else change.key.split(":", 1)[0]

    def _check(self, change: OutgoingChange) -> str | None:
        """A token for the user, and an item to name."""
        user = self.user_of(change)
        if user not in self.tokens:
            return f"no token configured for user {user!r}"
        body = change.body or {}
        if not body.get("item") and ":" not in change.key:
            return "favourite has no item"
        return None

    def _auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

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
        """POST each user's items."""
        if self.options.read_only:
            raise PermanentError("provider is read-only", reason="provider is read-only")
        by_user: dict[str, list[dict[str, Any]]] = {}
        for change in batch:
            user = self.user_of(change)
            if user not in self.tokens:
                reason = f"no token configured for user {user!r}"
                raise PermanentError(reason, reason=reason)
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

    async def _pull(self, cursor: str | None) -> PullPage:
        """Every item of every (configured) user; unreadable items are skipped and counted."""
        changes: list[IncomingChange] = []
        skipped = 0
        users = self.options.users or tuple(self.tokens)
        for user in users:
            if user not in self.tokens:
                continue
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
    return FavouritesProvider(
        name, base_url, parse_options(options), parse_tokens(secret), timeout_s, batch_max_items
    )
