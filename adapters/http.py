"""The adapters' HTTP boundary: the one place where answers and httpx failures become
``adapters.errors`` types, and where every text that leaves an adapter loses its secrets.

``HttpAdapter`` is the base of the HTTP adapters. Its ``push``, ``pull`` and ``check``
are the adapter's boundary: they call the kind's ``_push``, ``_pull`` and ``_check``
and pass every message on through the adapter's ``Redactor`` (which knows every secret
the adapter was given), so no kind can forget it. ``send`` is the only way a kind
talks to its provider; it names the success answer it expects (``expect``), so an
answer of any other shape is an ``UnexpectedAnswer``, never a delivery.

Two extension points, for kinds whose API asks for them: a session (``_log_in`` gives a
``Session``; ``send(..., session=True)`` carries its headers, logs in when there is none
or it is due for renewal, and logs in again once on a 401), and a request's refusal
(``send(..., refusal=...)``: the kind reads a non-2xx answer that refuses one request,
for per-request outcomes).

Every request has one whole deadline (``adapters.deadline``: ``timeout_s`` for connect, send,
the answer's head and body; httpx's per-operation timeouts are off) and a cap on its answer
(``adapters.body``: a success answer of at most ``max_bytes`` decoded bytes, the kind's need,
else an ``UnexpectedAnswer``; any other answer is read up to ``MAX_ERROR_BODY`` and cut).

What each status means (docs/providers.md has the table):

* 2xx in the documented shape: success; any other 2xx, 1xx, or a status past 599:
  ``UnexpectedAnswer`` (retryable; the entries stay)
* 3xx (redirects are not followed), 404, 405, 406, 410, 415, 426, 428, 431, 501, 505:
  ``ProviderMisconfigured`` (retryable; nothing is the records' fault)
* 401, 403: ``AuthError``; 407 (a proxy on the way wants credentials of its own):
  ``ProviderMisconfigured``
* 429, 503: ``ProviderThrottled``; 408, 409, 421, 423, 425 and other 5xx: ``RetryableError``
* other 4xx: ``PermanentError`` (the engine isolates and dead-letters the records)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import orjson

from . import early_answer
from .base import OutgoingChange, ProviderLimits, PullPage, PushResult
from .body import ACCEPT_ENCODING, read_body
from .deadline import Deadline, DeadlinePassed
from .errors import (
    AuthError,
    PermanentError,
    ProviderError,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
    RetryableError,
    UnexpectedAnswer,
)
from .options import OptionError
from .proxy import proxy_problem, proxy_secrets, through
from .redact import MIN_SECRET, Redactor, excerpt

T = TypeVar("T")

MAX_REASON = 2000  # characters of a refusal kept as the dead letter's reason
MAX_EXCERPT = 300  # characters of an unexpected answer kept in last_error
MAX_ANSWER = 1 << 20  # bytes of a success answer read, unless the request names its own cap
MAX_ERROR_BODY = 64 << 10  # bytes of any other answer read (the rest is not)
MIN_UPLOAD_RATE = 64 << 10  # bytes a second an upload streamed from disk is allowed at least
# Retry-After values past this are read as this; the engine's own ceiling
# (max_retry_after_s) is far lower, and this keeps every sum within SQLite's int64.
MAX_RETRY_AFTER_S = 10 * 365 * 86400.0
MAX_SESSION_S = 366 * 86400.0  # a session said to last longer is renewed after this

MISCONFIGURED = frozenset({404, 405, 406, 410, 415, 426, 428, 431, 501, 505})
TRANSIENT = frozenset({408, 409, 421, 423, 425})


def secret_problem(value: str) -> str | None:
    """Why a secret ``value`` is refused, or None (never quotes it)."""
    if not value:
        return "a secret value is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return (
            "a secret value contains a control character (a line break?), which no request "
            "can carry"
        )
    if len(value) < MIN_SECRET:
        return f"a secret value is shorter than {MIN_SECRET} characters"
    return None


def header_problem(value: str) -> str | None:
    """Why a secret ``value`` cannot travel in an HTTP header, or None (never quotes it)."""
    problem = secret_problem(value)
    if problem is not None:
        return problem
    if value != value.strip():
        return "a secret value begins or ends with whitespace, which a header cannot carry"
    if not value.isascii():
        return "a secret value contains a non-ASCII character, which a header cannot carry"
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Never raises: a value that is neither (negative, fractional, garbage) is None;
    a huge one is ``MAX_RETRY_AFTER_S``; a date in the past is 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # int() of a long digit string is itself slow: anything this long is huge anyway.
        return MAX_RETRY_AFTER_S if len(text) > 12 else min(float(int(text)), MAX_RETRY_AFTER_S)
    try:
        moment = parsedate_to_datetime(text)
        seconds = moment.timestamp() - (time.time() if now is None else now)
    except Exception:  # any garbage: email.utils raises several types
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


@dataclass(frozen=True, slots=True)
class Session:
    """What a login gave: the headers that authorise a request, and when to log in again
    (``time.monotonic()``)."""

    headers: Mapping[str, str]
    renew_at: float

    @classmethod
    def lasting(cls, headers: Mapping[str, str], expires_in_s: float) -> Session:
        """A session the provider says lasts ``expires_in_s`` seconds: renewed a tenth of
        its life early, at most a minute early (a year at most is believed)."""
        life = min(expires_in_s, MAX_SESSION_S)
        return cls(headers, time.monotonic() + life - min(60.0, life / 10))


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's answer, read (up to a limit) before the connection is released."""

    method: str
    path: str
    status: int
    headers: httpx.Headers
    body: bytes
    complete: bool  # False: the body was longer than the limit and was cut

    def json(self) -> Any:
        """The body as JSON (raises ValueError when it is not)."""
        if not self.complete:
            raise ValueError(f"answer larger than {len(self.body)} bytes")
        return orjson.loads(self.body)

    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def describe(self, redact: Redactor, limit: int = MAX_EXCERPT) -> str:
        """``HTTP 200 text/html: <excerpt>``, secret-free, one line."""
        kind = self.headers.get("content-type", "no content type")
        if not self.body:
            return f"HTTP {self.status} {excerpt(kind, redact, limit=100)}, empty body"
        body = excerpt(self.text(), redact, limit=limit, complete=self.complete)
        return f"HTTP {self.status} {excerpt(kind, redact, limit=100)}: {body}"


def json_body(answer: Answer) -> Any:
    """An ``expect`` for kinds that document a JSON answer: the parsed body."""
    try:
        return answer.json()
    except ValueError as exc:
        raise ValueError("the body is not JSON") from exc  # orjson names a position, not text


def error_for(answer: Answer, redact: Redactor) -> ProviderError:
    """The error type of a non-success answer; every text is redacted and cut."""
    status = answer.status
    where = f"{answer.method} {answer.path}"
    if 300 <= status < 400:
        location = answer.headers.get("location")
        target = f" to {excerpt(location, redact, limit=300)}" if location else ""
        return ProviderMisconfigured(
            f"provider misconfigured: {where} answered HTTP {status}, a redirect{target}; "
            "redirects are not followed: set base_url to the provider's real address",
            status=status,
            retry_after=parse_retry_after(answer.headers.get("retry-after")),
        )
    if status == 407:
        # A proxy's answer, not the provider's: no record is at fault (never a dead letter).
        return ProviderMisconfigured(
            f"provider misconfigured: {where} answered {answer.describe(redact)}: a proxy on "
            "the way asks for credentials of its own (HTTP 407); put them in the proxy "
            "variable of the service's environment (http://user:password@host:port), or name "
            "the provider's host in NO_PROXY",
            status=status,
        )
    if status in (401, 403):
        return AuthError(f"credentials refused ({answer.describe(redact)})", status=status)
    if status < 200 or status > 599:
        return UnexpectedAnswer(
            f"unexpected answer to {where}: {answer.describe(redact)}", status=status
        )
    retry_after = parse_retry_after(answer.headers.get("retry-after"))
    if status in MISCONFIGURED:
        return ProviderMisconfigured(
            f"provider misconfigured: {where} answered {answer.describe(redact)}; check "
            "base_url and the provider's options",
            status=status,
            retry_after=retry_after,
        )
    if status in (429, 503):
        return ProviderThrottled(answer.describe(redact), status=status, retry_after=retry_after)
    if status in TRANSIENT or status >= 500:
        return RetryableError(answer.describe(redact), status=status, retry_after=retry_after)
    reason = answer.describe(redact, MAX_REASON)
    return PermanentError(reason, status=status, reason=reason)


class HttpAdapter:
    """Base of the HTTP adapters: the client, the redactor, and the boundary methods.

    A kind implements ``_push``, ``_pull`` and ``_check`` and talks to its provider
    only through ``send``; ``secrets`` are every secret value it was configured with
    (each travels in a header: a secret that travels only in a body is given to
    ``keep_secret`` instead). A kind that logs in implements ``_log_in``.
    """

    name: str
    limits: ProviderLimits
    _session: Session | None = None

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        *,
        secrets: Iterable[str],
        headers: Mapping[str, str] | None = None,
        min_upload_rate: float = MIN_UPLOAD_RATE,
    ) -> None:
        secrets = list(secrets)
        for secret in secrets:
            problem = header_problem(secret)
            if problem is not None:
                # Checked when the config is read; here so that no adapter is ever built with
                # one (httpx's own error would quote the header).
                raise OptionError("secret", problem)
        self.redact = Redactor([*secrets, *proxy_secrets()])
        self.timeout_s = timeout_s
        self.min_upload_rate = min_upload_rate
        self.client = make_client(base_url, headers)

    def keep_secret(self, values: Iterable[str]) -> None:
        """Further values this adapter must never say (another secret of its provider)."""
        self.redact.extend(values)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.aclose()

    # The boundary: what leaves these three methods is secret-free.

    def check(self, change: OutgoingChange) -> str | None:
        """Why ``change`` can never be sent, or None (see ``Provider.check``)."""
        reason = self._check(change)
        return None if reason is None else self.redact(reason)

    async def push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        """Send one batch (see ``Provider.push``)."""
        with self._boundary():
            result = await self._push(batch, idempotency_key=idempotency_key)
        if not any(outcome.reason for outcome in result.outcomes):
            return result
        # A request's refusal is said in the provider's words, which may echo a secret.
        outcomes = [
            replace(o, reason=self.redact(o.reason)) if o.reason else o for o in result.outcomes
        ]
        return replace(result, outcomes=outcomes)

    async def pull(self, cursor: str | None) -> PullPage:
        """Fetch changes since ``cursor`` (see ``Provider.pull``)."""
        with self._boundary():
            return await self._pull(cursor)

    @contextmanager
    def _boundary(self) -> Any:
        try:
            yield
        except ProviderError as exc:
            exc.redact(self.redact)
            raise
        except Exception as exc:
            # The kind could not make sense of what it received: a protocol error, never a
            # crash. The original may quote the answer (and so a secret): it is not chained.
            raise UnexpectedAnswer(
                f"the provider's answer could not be read: {type(exc).__name__}: "
                f"{excerpt(str(exc), self.redact, limit=MAX_EXCERPT)}"
            ) from None

    def _check(self, change: OutgoingChange) -> str | None:
        return None

    async def _log_in(self) -> Session:
        """Log in (a kind whose requests carry a session: ``send(..., session=True)``).

        The login is a ``send`` of its own (without ``session``); its ``expect`` gives
        ``keep_secret`` each secret the answer holds (a token) before it checks anything
        else, so that no text says it, even that of an answer refused.
        """
        raise NotImplementedError

    async def _push(self, batch: Sequence[OutgoingChange], *, idempotency_key: str) -> PushResult:
        raise NotImplementedError

    async def _pull(self, cursor: str | None) -> PullPage:
        raise NotImplementedError

    async def send(
        self,
        method: str,
        path: str,
        *,
        expect: Callable[[Answer], T],
        refusal: Callable[[Answer], T | None] | None = None,
        session: bool = False,
        max_bytes: int = MAX_ANSWER,
        cap: str = "",
        upload_bytes: int | None = None,
        **kwargs: Any,
    ) -> T:
        """Send a request and return ``expect(answer)`` for a 2xx answer.

        ``expect`` states the kind's documented success answer: it returns what the kind
        needs from it, or raises ValueError saying what is wrong (an ``UnexpectedAnswer``).
        A success answer longer than ``max_bytes`` is one too (``cap`` names the option
        that sets it). ``upload_bytes``: the ``content`` is a body of that size streamed
        from disk (its deadline is the upload's, see ``adapters.deadline``).
        Transport failures and other statuses raise their ``adapters.errors`` type.

        ``refusal`` (a kind with per-request outcomes) reads a non-2xx answer first: it
        returns the kind's result when the answer refuses this one request (what ``send``
        returns), None when the status table reads it (``error_for``), or raises the kind's
        own ``adapters.errors`` type for it. ``session``: the request carries the session's
        headers (``_log_in``); a 401 logs in again and sends the request once more (not a
        streamed upload, which cannot be sent twice).
        """
        sent: dict[str, Any] = {"max_bytes": max_bytes, "cap": cap, "upload_bytes": upload_bytes}
        sent.update(kwargs)
        if session:
            answer = await self._in_session(method, path, sent)
        else:
            answer = await self._exchange(method, path, sent)
        if not 200 <= answer.status < 300:
            refused = None if refusal is None else refusal(answer)
            if refused is not None:
                return refused
            raise error_for(answer, self.redact)
        try:
            return expect(answer)
        except ValueError as exc:
            # The kind's message is redacted here; what it was raised from may quote the body.
            problem = excerpt(str(exc), self.redact, limit=200)
            raise UnexpectedAnswer(
                f"unexpected answer to {method} {path}: {problem}: {answer.describe(self.redact)}",
                status=answer.status,
            ) from None

    async def _exchange(self, method: str, path: str, sent: dict[str, Any]) -> Answer:
        return await fetch(
            self.client,
            method,
            path,
            timeout_s=self.timeout_s,
            min_upload_rate=self.min_upload_rate,
            redact=self.redact,
            **sent,
        )

    async def _in_session(self, method: str, path: str, sent: dict[str, Any]) -> Answer:
        """The request with the session's headers, logged in first when there is no session
        or it is due for renewal; a 401 forgets the session and is asked once more."""
        headers = sent.pop("headers", None) or {}
        again = sent["upload_bytes"] is None
        while True:
            session = self._session
            if session is None or time.monotonic() >= session.renew_at:
                session = self._session = await self._log_in()
            answer = await self._exchange(
                method, path, {**sent, "headers": {**headers, **session.headers}}
            )
            if answer.status != 401 or not again:
                return answer
            if self._session is session:
                self._session = None
            again = False


# The boundary's one exchange, also for requests outside an adapter's provider (churn's
# download of an error log): the same client settings, deadline, cap and transport errors.


def make_client(base_url: str = "", headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """A client with the adapters' settings: no httpx timeouts (each request has its
    ``Deadline``), no redirects followed, only the encodings ``adapters.body`` can bound,
    and an answer sent before the request's body was read is read (``adapters.early_answer``).

    The environment's proxy variables are honoured (``adapters.proxy``); one httpx cannot
    use is an ``OptionError`` naming it (the provider pauses), never an exception of httpx's.
    """
    problem = proxy_problem()
    if problem is not None:
        raise OptionError(*problem)
    client = httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(None),
        headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})},
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
        follow_redirects=False,
    )
    early_answer.install(client)
    return client


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    timeout_s: float,
    max_bytes: int = MAX_ANSWER,
    cap: str = "",
    upload_bytes: int | None = None,
    min_upload_rate: float | None = None,
    redact: Redactor | None = None,
    **kwargs: Any,
) -> Answer:
    """Send a request under its whole deadline and read its answer up to the cap.

    Any status comes back as an ``Answer`` (the caller judges it), except a success answer
    longer than ``max_bytes`` or in an encoding that was not asked for (``UnexpectedAnswer``).
    Past the deadline, or when the provider cannot be reached: ``ProviderUnavailable``.
    Texts that could quote a header or the provider's bytes are redacted with ``redact`` or
    left out.
    """
    redact = redact or Redactor()
    deadline = Deadline(timeout_s, upload_bytes=upload_bytes, min_upload_rate=min_upload_rate)
    upload = None
    if upload_bytes is not None:
        upload = kwargs["content"] = deadline.track(kwargs["content"])
    try:
        return await _fetch(client, method, path, deadline, max_bytes, cap, redact, kwargs)
    finally:
        if upload is not None:
            await upload.aclose()  # a request cut short lets go of its file now


async def _fetch(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    deadline: Deadline,
    max_bytes: int,
    cap: str,
    redact: Redactor,
    kwargs: dict[str, Any],
) -> Answer:
    try:
        request = client.build_request(method, path, **kwargs)
    except Exception as exc:
        # E.g. a header value httpx cannot encode: the text may quote it, so only the type.
        raise RetryableError(f"the request could not be built ({type(exc).__name__})") from None
    if path.startswith(("http://", "https://")):
        path = request.url.path  # a whole URL (a download's) is said without its query

    async def exchange() -> tuple[Answer, str | None]:
        response = await client.send(request, stream=True)
        try:
            limit = max_bytes if 200 <= response.status_code < 300 else MAX_ERROR_BODY
            body, complete, problem = await read_body(response, limit)
        finally:
            await response.aclose()
        answer = Answer(method, path, response.status_code, response.headers, body, complete)
        if early_answer.answered_early(response) and 200 <= answer.status < 300:
            problem = "it came before the request was sent whole: not a success"
        return answer, problem

    try:
        answer, problem = await deadline.run(exchange)
    except DeadlinePassed as exc:
        raise ProviderUnavailable(f"{method} {path}: {exc}{_via(request)}") from None
    except (httpx.TimeoutException, httpx.NetworkError) as exc:
        # Their texts come from the socket layer, never from a header: the cause is kept.
        detail = redact(str(exc)) or "no detail"
        raise ProviderUnavailable(f"{type(exc).__name__}: {detail}{_via(request)}") from exc
    except httpx.ProxyError as exc:
        # The proxy refused to open the way (its status and reason phrase, redacted).
        said = excerpt(str(exc), redact, limit=MAX_EXCERPT)
        where = through(request.url) or "the proxy"
        text = f"{method} {path}: {where} refused to connect to the provider: {said}"
        if said.startswith("407"):
            raise ProviderMisconfigured(
                f"provider misconfigured: {text}; put the proxy's credentials in its variable "
                "(http://user:password@host:port), or name the provider's host in NO_PROXY",
                status=407,
            ) from None
        raise ProviderUnavailable(text) from None
    except httpx.RemoteProtocolError as exc:
        # h11 quotes the provider's bytes, which may echo a secret: redacted, not chained.
        raise ProviderUnavailable(
            f"RemoteProtocolError: {excerpt(str(exc), redact, limit=MAX_EXCERPT)}{_via(request)}"
        ) from None
    except httpx.HTTPError as exc:
        # E.g. LocalProtocolError: its text quotes our own request's headers: only the type.
        raise RetryableError(f"{type(exc).__name__} (the request could not be sent)") from None
    if 200 <= answer.status < 300:
        if problem is not None:
            raise UnexpectedAnswer(
                f"unexpected answer to {method} {path}: HTTP {answer.status}: {problem}",
                status=answer.status,
            )
        if not answer.complete:
            said = f" ({cap})" if cap else ""
            raise UnexpectedAnswer(
                f"the answer to {method} {path} (HTTP {answer.status}) is larger than "
                f"{max_bytes} bytes{said}, the most read: not read further",
                status=answer.status,
            )
    return answer


def _via(request: httpx.Request) -> str:
    """`` (through the proxy http://host:port (HTTP_PROXY))`` when the request went through
    one the environment names: a failure on the way may be the proxy's."""
    proxy = through(request.url)
    return "" if proxy is None else f" (through {proxy})"
