"""The event-registration adapter (seed 002): pulled incrementally, with 2-way registration.

Wire contract (docs/providers.md; every path is a config template): a login with username
and password gives a bearer token; each of participants, sessions, registrations,
locations and sessionTags is listed page by page, with ``utcModifiedDate`` = the stored
cursor for an incremental pull; a registration request is a POST (register) or a DELETE
(cancel) asked at once, one request at a time. The password and the token are removed
from every text that leaves this module (``adapters.redact``).
"""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import orjson
import structlog

from ..base import (
    IDEMPOTENCY_HEADER,
    IncomingChange,
    JSONObject,
    Lookup,
    OutgoingChange,
    ProviderLimits,
    PullPage,
    PullStream,
    PushResult,
    RequestOutcome,
    StreamPage,
)
from ..errors import PermanentError, RetryableError
from ..http import (
    MAX_REASON,
    MISCONFIGURED,
    TRANSIENT,
    Answer,
    HttpAdapter,
    Session,
    json_body,
)
from ..options import OptionError, OptionReader
from ..redact import MIN_SECRET
from . import REQUESTS
from .data import (
    Page,
    PageError,
    RegistrationRequest,
    find_unrepresentable,
    format_modified,
    item_identity,
    load_json,
    master_sessions,
    parse_modified,
    parse_page,
    parse_request,
    participant_body,
)

log = structlog.get_logger(__name__)

# Provider resource name -> collection name (before the prefix).
RESOURCES = {
    "participants": "participants",
    "sessions": "sessions",
    "registrations": "registrations",
    "locations": "locations",
    "sessionTags": "session_tags",
}
DEFAULT_PATHS = {
    "login": "/api/v1/login",
    **{resource: f"/api/v1/events/{{eventId}}/{resource}" for resource in RESOURCES},
    "register": "/api/v1/events/{eventId}/registrations",
    "cancel": "/api/v1/events/{eventId}/registrations/{id}",
}
_PLACEHOLDERS = {"eventId", "id"}
_FIXED_MAPPING = ("fp_ext_id", "fp_status")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,4096}")
MAX_FULL_PULL_INTERVAL_S = 30 * 86400.0
MAX_PAGE_MB = 8  # a page's answer is read up to this (max_page_mb)
REFUSING = (409, 422)  # the contract's refusals; any other 4xx refuses only with a JSON reason


@dataclass(frozen=True, slots=True)
class RegistrationsOptions:
    """The registrations kind's own config keys."""

    username: str
    event_id: str
    concurrent_sessions_title: str | None = None
    remove_outdated: tuple[str, ...] = ()
    full_pull_interval_s: float = 0.0
    incremental: bool = True
    collection_prefix: str = ""
    page_size: int = 500
    paths: Mapping[str, str] | None = None
    max_page_bytes: int = MAX_PAGE_MB << 20

    def collection(self, name: str) -> str:
        """A collection's name with the prefix."""
        return self.collection_prefix + name

    def path(self, name: str) -> str:
        """The path template of ``name`` (configured, else the default contract's)."""
        return (self.paths or {}).get(name) or DEFAULT_PATHS[name]


def _refuse_mapping(options: Mapping[str, Any]) -> None:
    for name in _FIXED_MAPPING:
        if name in options:
            raise OptionError(name, f"the mapping of {name} is fixed by the provider's document")
    mapping = options.get("mapping")
    if isinstance(mapping, dict):
        for table, value in mapping.items():
            names = value if isinstance(value, dict) else {table: value}
            for field in (*names, *(v for v in names.values() if isinstance(v, str))):
                if field in _FIXED_MAPPING:
                    raise OptionError(
                        f"mapping.{table}",
                        "fp_ext_id and fp_status are mapped as the provider's document says "
                        "(fp_ext_id = the provider's id; fp_status = active when "
                        "RegistrationStatus is Registered, else cancelled); no config changes them",
                    )
    if "mapping" in options:
        raise OptionError("mapping", "field mappings are not configurable for this kind")


def _paths(raw: dict[str, Any]) -> dict[str, str]:
    paths: dict[str, str] = {}
    for name, template in raw.items():
        key = f"paths.{name}"
        if name not in DEFAULT_PATHS:
            raise OptionError(key, f"unknown path; expected one of {', '.join(DEFAULT_PATHS)}")
        if not isinstance(template, str) or not template.startswith("/"):
            raise OptionError(key, "expected a path starting with '/'")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise OptionError(key, f"not a path template: {exc}") from None
        if not fields <= _PLACEHOLDERS:
            raise OptionError(key, "placeholders are {eventId} and, for cancel, {id}")
        if name == "cancel" and "id" not in fields:
            raise OptionError(key, "the cancel path needs the registration's {id}")
        paths[name] = template
    return paths


def parse_options(options: Mapping[str, Any]) -> RegistrationsOptions:
    """Validate ``[providers.NAME]`` keys of kind registrations."""
    _refuse_mapping(options)
    read = OptionReader(options)
    prefix = options.get("collection_prefix", "")
    read.used.add("collection_prefix")
    if not isinstance(prefix, str) or prefix.startswith(".") or "/" in prefix:
        raise OptionError("collection_prefix", "expected text usable in a folder name")
    remove = read.strings("remove_outdated")
    for name in remove:
        if name not in RESOURCES.values():
            raise OptionError(
                "remove_outdated", f"{name!r} is not one of {', '.join(RESOURCES.values())}"
            )
    parsed = RegistrationsOptions(
        username=read.string("username", required=True) or "",
        event_id=read.string("event_id", required=True) or "",
        concurrent_sessions_title=read.string("concurrent_sessions_title"),
        remove_outdated=remove,
        full_pull_interval_s=read.number(
            "full_pull_interval_s", 0.0, minimum=0.0, maximum=MAX_FULL_PULL_INTERVAL_S
        ),
        incremental=read.boolean("incremental", True),
        collection_prefix=prefix,
        page_size=read.integer("page_size", 500, minimum=1, maximum=10_000),
        paths=_paths(read.table("paths")),
        max_page_bytes=read.integer("max_page_mb", MAX_PAGE_MB, minimum=1, maximum=1024) << 20,
    )
    read.reject_unknown()
    return parsed


def _provider_time(answer: Answer) -> int:
    """The provider's clock from its ``Date`` header (else ours), in epoch ms."""
    header = answer.headers.get("date")
    if header:
        try:
            return int(parsedate_to_datetime(header).timestamp() * 1000)
        except (TypeError, ValueError, OverflowError):
            pass
    return int(time.time() * 1000)


def _json_or_none(answer: Answer) -> Any:
    try:
        return json_body(answer)
    except ValueError:
        return None


def _loose_json(raw: bytes) -> Any:
    """``raw`` read by the standard library's parser, which takes what orjson refuses
    (``1e400``, ``NaN``): only to find a secret in an answer that is refused anyway."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """The provider's answer to one registration request: ``refused`` (its reason), or
    done (``registration`` and ``state`` for a registration)."""

    status: int
    at_ms: int = 0  # the provider's clock (``_provider_time``)
    refused: str | None = None
    registration: str = ""
    state: str = ""


def registered(answer: Answer) -> Reply:
    """A registration's success: 201 ``{id, status}``."""
    body = _json_or_none(answer)
    reg_id = body.get("id") if isinstance(body, dict) else None
    state = body.get("status") if isinstance(body, dict) else None
    if (
        answer.status != 201
        or isinstance(reg_id, bool)
        or not isinstance(reg_id, str | int)
        or reg_id == ""
        or not isinstance(state, str)
    ):
        raise ValueError("expected 201 {id, status}")
    return Reply(answer.status, _provider_time(answer), registration=str(reg_id), state=state)


def cancelled(answer: Answer) -> Reply:
    """A cancellation's success: 204, or 200 with an empty or JSON body. A 200 page (HTML,
    text: a proxy's, say) proves nothing was cancelled, so the request stays pending."""
    if answer.status == 200 and answer.body.strip():
        try:
            json_body(answer)
        except ValueError:
            raise ValueError("expected 204, or 200 with an empty or JSON body") from None
    elif answer.status not in (200, 204):
        raise ValueError("expected 204, or 200 with an empty or JSON body")
    return Reply(answer.status, _provider_time(answer))


# How far before a pull's start (this machine's clock) the next pull may have to ask from:
# the provider's clock may be behind ours by up to this (docs/providers.md, "Cursors").
CURSOR_OVERLAP_MS = 300_000


def safe_cursor(
    greatest: tuple[int, str] | None,
    first_top: tuple[int, str] | None,
    pages_read: int,
    started_ms: int,
) -> tuple[int, str] | None:
    """The cursor a pull of ``pages_read`` pages ends with: what the next pull asks from.

    The newest ``utcModifiedDate`` read (``greatest``) is safe only for a pull of one page.
    Over several, an item of a page already read may change meanwhile, before an item of a
    later page whose new date is read: asking from that date next time would never see the
    first change. A change made after the first page was listed is dated after the newest
    date on that page (``first_top``: the provider listed it with those dates), and after
    the pull's start less ``CURSOR_OVERLAP_MS``; the next pull asks from the later of the
    two (``utcModifiedDate`` is inclusive: what is read again merges as unchanged).
    """
    if pages_read == 1 or greatest is None:
        return greatest
    floor = started_ms - CURSOR_OVERLAP_MS
    start = first_top if first_top is not None and first_top[0] >= floor else None
    if start is None:
        start = (floor, format_modified(floor))
    return start if start[0] < greatest[0] else greatest


class RegistrationsProvider(HttpAdapter):
    """Pulls an event's five resources; asks the provider about registration requests.

    Its requests carry a session (``HttpAdapter.send(..., session=True)``): ``_log_in``
    sends the username and password and keeps the token the provider gives.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        options: RegistrationsOptions,
        password: str,
        timeout_s: float,
    ) -> None:
        self.name = name
        self.options = options
        self._password = password
        # One request at a time: a half-answered batch would be asked again as a whole.
        self.limits = ProviderLimits(max_items=1, can_push=True, can_pull=True)
        super().__init__(base_url, timeout_s, secrets=(), headers={"Accept": "application/json"})
        # The password travels in the login's JSON body, never in a header: any text will do.
        self.keep_secret([password])
        self._token: str | None = None  # the last token the provider gave
        self._lookup: Lookup | None = None
        self.requests_collection = options.collection(REQUESTS)

    def attach_lookup(self, lookup: Lookup) -> None:
        """The daemon's read of current records (to find a registration to cancel)."""
        self._lookup = lookup

    # ----- the session --------------------------------------------------------------------

    def _url(self, name: str, **values: str) -> str:
        fields = {"eventId": self.options.event_id, **values}
        return self.options.path(name).format(**{k: quote(v, safe="") for k, v in fields.items()})

    async def _log_in(self) -> Session:
        """``POST`` the username and password; the token answered is the session's."""
        return await self.send(
            "POST",
            self._url("login"),
            expect=self._session_of,
            content=orjson.dumps({"username": self.options.username, "password": self._password}),
            headers={"Content-Type": "application/json"},
        )

    def _session_of(self, answer: Answer) -> Session:
        """The login's success: 200 ``{token, expiresIn}``, a header-safe token."""
        body = _json_or_none(answer)
        seen = body if body is not None else _loose_json(answer.body)
        if isinstance(seen, dict) and isinstance(seen.get("token"), str):
            self.keep_secret([seen["token"]])  # a secret even in an answer refused below
        token = body.get("token") if isinstance(body, dict) else None
        expires = body.get("expiresIn") if isinstance(body, dict) else None
        if (
            answer.status != 200
            or not isinstance(token, str)
            or not _HEADER_SAFE.fullmatch(token)
            or len(token) < MIN_SECRET
            or isinstance(expires, bool)
            or not isinstance(expires, int | float)
            or not expires > 0
        ):
            raise ValueError("expected 200 {token, expiresIn}")
        self._token = token
        return Session.lasting({"Authorization": f"Bearer {token}"}, float(expires))

    async def probe(self) -> str:
        """Log in, as the document's "check if the credentials are working" does: a refused
        password is ``AuthError``; nothing changes at the provider."""
        with self._boundary():
            self._session = await self._log_in()
        return f"POST {self._url('login')}"

    # ----- pull ---------------------------------------------------------------------------

    def pull_streams(self) -> Sequence[PullStream]:
        """The five resources, in the order the document lists them."""
        return [
            PullStream(
                name=resource,
                collection=self.options.collection(collection),
                remove_outdated=collection in self.options.remove_outdated,
                derived=resource == "sessions" and bool(self.options.concurrent_sessions_title),
                full_pull_interval_s=self.options.full_pull_interval_s,
            )
            for resource, collection in RESOURCES.items()
        ]

    async def _pull(self, cursor: str | None) -> PullPage:
        """Not used: the daemon pulls this kind per stream (``stream_pages``)."""
        raise PermanentError("the registrations kind is pulled per resource")

    async def stream_pages(
        self, stream: PullStream, since: str | None
    ) -> AsyncIterator[StreamPage]:
        """Every page of one pull of ``stream`` (full: ``since`` is None or incremental is off)."""
        full = since is None or not self.options.incremental
        greatest = None if full or since is None else (parse_modified(since) or 0, since)
        url = self._url(stream.name)
        size = self.options.page_size
        page_number, read, total = 1, 0, None
        previous: list[str] = []  # the last page's ids (memory stays one page deep)
        settled = True
        first_top: tuple[int, str] | None = None
        started_ms = int(time.time() * 1000)
        while True:
            params: dict[str, str | int] = {"page": page_number, "pageSize": size}
            if not full and since is not None:
                params["utcModifiedDate"] = since
            with self._boundary():
                page, changes, keys, skipped, top = await self._page(stream, url, params)
            if total is None:
                total = page.total
            elif page.total != total:
                settled = False  # the listing moved while it was paged
            settled = settled and not skipped
            if top is not None and (greatest is None or top[0] > greatest[0]):
                greatest = top
            if page_number == 1:
                first_top = top
            read += len(page.items)
            last = not page.items or read >= page.total
            if keys and keys == previous:
                # The same page again: the provider ignores `page` (or loops). Stop.
                last, settled = True, False
            previous = keys
            cursor = greatest
            if last:
                settled = settled and read == total
                cursor = safe_cursor(greatest, first_top, page_number, started_ms)
            yield StreamPage(
                changes=changes,
                cursor=None if cursor is None else cursor[1],
                last=last,
                settled=settled,
                full=full,
            )
            if last:
                return
            page_number += 1

    def _listing(self, answer: Answer) -> tuple[Page, bool, bool]:
        """A page's success: 200 ``{items, total}`` (the page, whether its numbers need the
        exact parser, whether it echoes a secret)."""
        try:
            value, exact = load_json(answer.body)
            page = parse_page(value)
        except PageError as exc:
            raise ValueError(f"expected {{items, total}}: {exc}") from None
        if answer.status != 200:
            raise ValueError("expected 200 {items, total}")
        return page, exact, self.redact.contains(answer.body)

    async def _page(
        self, stream: PullStream, url: str, params: Mapping[str, str | int]
    ) -> tuple[Page, list[IncomingChange], list[str], int, tuple[int, str] | None]:
        page, exact, echoed = await self.send(
            "GET",
            url,
            session=True,
            expect=self._listing,
            params=params,
            max_bytes=self.options.max_page_bytes,
            cap="a page is read up to max_page_mb; lower page_size or raise max_page_mb",
        )
        changes: list[IncomingChange] = []
        keys: list[str] = []
        skipped = 0
        top: tuple[int, str] | None = None
        participants = stream.name == "participants"
        for item in page.items:
            try:
                key, ms, modified = item_identity(item)
                if exact and (bad := find_unrepresentable(item)) is not None:
                    raise ValueError(f"item {key[:64]} holds {bad[:40]}, which no number can hold")
            except ValueError as exc:
                skipped += 1
                log.warning(
                    "pull_item_skipped",
                    provider=self.name,
                    resource=stream.name,
                    reason=self.redact(str(exc)),
                )
                continue
            keys.append(key)
            if top is None or ms > top[0]:
                top = (ms, modified)
            body: dict[str, Any] = participant_body(item, key) if participants else item
            if echoed:
                body = self._scrub(body)
            changes.append(IncomingChange(stream.collection, key, ms, False, body))
        return page, changes, keys, skipped, top

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        return value

    def derive(
        self, stream: PullStream, records: Sequence[tuple[str, int, bool, JSONObject | None]]
    ) -> Sequence[IncomingChange]:
        """Master sessions for concurrent sessions (only with concurrent_sessions_title)."""
        title = self.options.concurrent_sessions_title
        if stream.name != "sessions" or not title:
            return []
        return master_sessions(stream.collection, records, title)

    # ----- 2-way registration -------------------------------------------------------------

    def _check(self, change: OutgoingChange) -> str | None:
        """Only registration requests go to this kind."""
        if change.collection != self.requests_collection:
            return (
                f"a registrations provider takes only {self.requests_collection} records; "
                f"route {change.collection} elsewhere"
            )
        return None

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """Ask the provider about each request; each gets an outcome (or the batch raises)."""
        outcomes: list[RequestOutcome] = []
        changes: list[IncomingChange] = []
        status = 204
        for change in batch:
            if change.deleted:
                continue  # a withdrawn request: nothing to ask
            try:
                wanted = parse_request(change.body)
            except ValueError as exc:
                outcomes.append(RequestOutcome(change.entry_id, "refused", str(exc)))
                continue
            key = idempotency_key if len(batch) == 1 else f"{idempotency_key}:{change.entry_id}"
            if wanted.action == "register":
                outcome, status = await self._register(change, wanted, key, changes)
            else:
                outcome, status = await self._cancel(change, wanted, key, changes)
            outcomes.append(outcome)
        return PushResult(state="confirmed", status=status, outcomes=outcomes, changes=changes)

    def _refusal(self, answer: Answer) -> Reply | None:
        """A request refused: 409 or 422, or another 4xx with a JSON ``reason``; None for an
        answer the status table reads (3xx, 401, 403, 407, 408, 429, 5xx, and without a reason
        404 and the others of a setup or a moment rather than of the request). Any other 4xx
        without a reason is not the request's fault either: it stays pending."""
        status = answer.status
        if not 400 <= status < 500 or status in (401, 403, 407, 408, 429):
            return None
        body = _json_or_none(answer)
        reason = body.get("reason") if isinstance(body, dict) else None
        if isinstance(reason, str) and reason:
            return Reply(status, refused=self.redact(reason)[:MAX_REASON])
        if status in REFUSING:
            return Reply(status, refused=answer.describe(self.redact, MAX_REASON))
        if status in MISCONFIGURED or status in TRANSIENT:
            return None
        raise RetryableError(
            f"{answer.method} {answer.path} answered {answer.describe(self.redact)}: "
            "not a refusal (no reason); the request stays pending",
            status=status,
        )

    async def _register(
        self,
        change: OutgoingChange,
        wanted: RegistrationRequest,
        key: str,
        changes: list[IncomingChange],
    ) -> tuple[RequestOutcome, int]:
        reply = await self.send(
            "POST",
            self._url("register"),
            session=True,
            expect=registered,
            refusal=self._refusal,
            content=orjson.dumps(
                {"participantId": wanted.participant, "sessionId": wanted.session}
            ),
            headers={"Content-Type": "application/json", IDEMPOTENCY_HEADER: key},
        )
        if reply.refused is not None:
            return RequestOutcome(change.entry_id, "refused", reply.refused), reply.status
        # Dated a second before the provider's clock: the registration as the next pull
        # brings it (with the provider's own utcModifiedDate) always wins over this copy.
        changes.append(
            IncomingChange(
                self.options.collection("registrations"),
                reply.registration,
                reply.at_ms - 1000,
                False,
                {
                    "id": reply.registration,
                    "participantId": wanted.participant,
                    "sessionId": wanted.session,
                    "status": self.redact(reply.state),
                },
            )
        )
        return (
            RequestOutcome(change.entry_id, "confirmed", remote_ref=reply.registration),
            reply.status,
        )

    async def _find_registration(
        self, wanted: RegistrationRequest
    ) -> tuple[str, int, JSONObject] | None:
        if self._lookup is None:
            return None
        found = await self._lookup(
            self.options.collection("registrations"),
            {"participantId": wanted.participant, "sessionId": wanted.session},
        )
        active = [(k, ts, b) for k, ts, b in found if b.get("status") != "Cancelled"]
        if active:
            return max(active, key=lambda r: r[1])
        # None live: the newest cancelled one is asked again. A cancel whose answer was lost
        # (the provider cancelled, then a pull brought the registration as Cancelled) carries
        # the same Idempotency-Key, so the provider's replay confirms it; a registration
        # cancelled otherwise is the provider's to answer (204 again, or a refusal).
        return max(found, key=lambda r: r[1]) if found else None

    async def _cancel(
        self,
        change: OutgoingChange,
        wanted: RegistrationRequest,
        key: str,
        changes: list[IncomingChange],
    ) -> tuple[RequestOutcome, int]:
        current = await self._find_registration(wanted)
        registration = wanted.registration_id or (current[0] if current else None)
        if registration is None:
            unknown = (
                f"no registration of participant {wanted.participant} to session "
                f"{wanted.session} is known here (give registrationId, or wait for a pull)"
            )
            return RequestOutcome(change.entry_id, "refused", unknown), 0
        reply = await self.send(
            "DELETE",
            self._url("cancel", id=registration),
            session=True,
            expect=cancelled,
            refusal=self._refusal,
            headers={IDEMPOTENCY_HEADER: key},
        )
        if reply.refused is not None:
            return RequestOutcome(change.entry_id, "refused", reply.refused), reply.status
        previous = current[1] if current and current[0] == registration else 0
        body = dict(current[2]) if current and current[0] == registration else {}
        body.update(
            id=registration,
            participantId=wanted.participant,
            sessionId=wanted.session,
            status="Cancelled",
        )
        changes.append(
            IncomingChange(
                self.options.collection("registrations"),
                registration,
                max(previous + 1, reply.at_ms - 1000),
                False,
                body,
            )
        )
        return (
            RequestOutcome(change.entry_id, "confirmed", remote_ref=registration),
            reply.status,
        )


# The password travels in the login request's JSON body, not in a header.
SECRET_IN_HEADERS = False


def secret_values(secret: str | None) -> list[str]:
    """The values of the secret that travel in requests: the password (in the login body)."""
    if not secret:
        raise OptionError("secret_env", "the provider's password is required")
    return [secret]


def build(
    name: str,
    base_url: str,
    options: Mapping[str, Any],
    secret: str | None,
    timeout_s: float,
    batch_max_items: int | None,
) -> RegistrationsProvider:
    """The adapter for a ``kind = "registrations"`` provider (the secret is the password)."""
    if not secret:
        raise OptionError("secret_env", "the provider's password is required")
    if len(secret) < MIN_SECRET:
        raise OptionError("secret_env", f"the password is shorter than {MIN_SECRET} characters")
    return RegistrationsProvider(name, base_url, parse_options(options), secret, timeout_s)
