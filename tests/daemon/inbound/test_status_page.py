"""The listener's status page (``GET /``) over a real store, without a browser: what it
shows and escapes, the headers that keep it from being framed or cached, what it never
shows (keys, paths, secrets), the pauses of the runtime file, a store it cannot read.
tests/e2e/test_status_page.py loads it in headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from dropsync.daemon.config import Config
from dropsync.daemon.inbound.listener import Listener
from dropsync.daemon.inbound.status_html import render
from dropsync.daemon.inbound.status_page import PageData, hour_start, read_page
from dropsync.daemon.process.runstate import RuntimeFile
from dropsync.store.activity import HOUR_MS
from dropsync.store.handle import Store

from tests.churn_support import CALLBACK_SECRET, churn_config
from tests.support import StoreLockHolder

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("churn_secrets")]

HOSTILE = '<script>alert("x")</script> it\'s "quoted" & <u>under</u>'
KEY = "ann.secret-person@example.com"


class Elements(HTMLParser):
    """The elements of a page: (tag, attributes) in document order, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def tags(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        """The attributes of each ``tag`` element (of class ``cls``)."""
        return [
            a
            for t, a in self.found
            if t == tag and (cls is None or cls in (a.get("class") or "").split())
        ]


def sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(statement, params)
    finally:
        db.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "store.db")
    try:
        yield opened
    finally:
        await opened.close()


def fill(path: Path, now: int) -> None:
    """Two providers, deliveries this hour and 5 hours ago, a hostile dead letter whose key is
    an email address, a quarantined file with a hostile name."""
    sql(path, "INSERT INTO providers (name, kind, updated_at) VALUES ('churn', 'churn', 0)")
    sql(
        path,
        "INSERT INTO providers (name, kind, state, last_error, updated_at) "
        "VALUES ('crm', 'crm', 'backing-off', ?, 0)",
        (f"HTTP 500: {HOSTILE} {CALLBACK_SECRET}",),
    )
    for at, state, items in ((now - 60_000, "confirmed", 40), (now - 5 * HOUR_MS, "accepted", 7)):
        sql(
            path,
            "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at) "
            "VALUES ('churn', 'b', ?, ?, ?)",
            (items, state, at),
        )
    sql(
        path,
        "INSERT INTO deliveries (provider, batch_id, items, state, attempted_at) "
        "VALUES ('crm', 'b', 3, 'failed', ?)",
        (now - 2 * HOUR_MS,),
    )
    sql(
        path,
        "INSERT INTO dead_letters (provider, collection, key, updated_at, http_status, reason, "
        "attempts, created_at) VALUES ('crm', 'contacts', ?, 1, 422, ?, 1, ?)",
        (KEY, f"HTTP 422: {HOSTILE}", now - 1000),
    )
    sql(
        path,
        "INSERT INTO files (collection, name, path, sha256, size, status, error, received_at, "
        "finished_at) VALUES ('contacts', ?, ?, 'x', 1, 'quarantined', ?, 1, ?)",
        (
            '<img src=x onerror="alert(1)">.json',
            "/srv/private/drop/.quarantine/f.json",
            HOSTILE,
            now,
        ),
    )


def listener_for(store: Store, config: Config) -> Listener:
    return Listener(store, config, wake=lambda names: None, adapter=lambda name: None)


async def get_page(listener: Listener) -> httpx.Response:
    transport = httpx.ASGITransport(app=listener.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://status") as client:
        return await client.get("/")


async def test_the_page_shows_each_provider_its_chart_and_reasons_escaped(
    tmp_path: Path, store: Store
) -> None:
    fill(store.path, int(time.time() * 1000))
    config = churn_config(tmp_path, "http://127.0.0.1:9", 9)
    answer = await get_page(listener_for(store, config))
    assert answer.status_code == 200
    page = answer.text
    parsed = Elements(page)
    providers = [a["data-provider"] for a in parsed.tags("article", "provider")]
    assert providers == ["churn", "crm"]
    charts = parsed.tags("svg", "chart")
    assert [a["data-provider"] for a in charts] == ["churn", "crm"]
    # The hostile texts are text, never markup; no script element at all.
    assert not parsed.tags("script") and not parsed.tags("img") and not parsed.tags("u")
    text = "".join(parsed.text)
    assert f"HTTP 422: {HOSTILE}" in text  # the dead letter's reason, as it was said
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.json" in page
    assert "<script" not in page.replace("&lt;script", "")
    # Churn: 47 records this day, 40 of them in the current hour (the last bar).
    assert "47 records delivered in 2 requests" in text
    assert "1 request failed" in text  # crm
    # Never shown: the dead letter's key, the file's path, a secret a provider said.
    assert KEY not in page and "/srv/private" not in page
    assert CALLBACK_SECRET not in page and "[redacted]" in text
    assert "backing-off" in text and "needs attention" in text


async def test_headers_keep_the_page_unframed_uncached_and_scriptless(
    tmp_path: Path, store: Store
) -> None:
    config = churn_config(tmp_path, "http://127.0.0.1:9", 9)
    answer = await get_page(listener_for(store, config))
    headers = answer.headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert "script-src" not in csp  # default-src 'none': no script at all
    [style] = re.findall(r"<style>(.*?)</style>", answer.text, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert csp["style-src"] == f"'sha256-{digest}'"
    assert ' style="' not in answer.text  # a style attribute would need 'unsafe-inline'
    assert '<meta http-equiv="refresh" content="15">' in answer.text


async def test_the_pauses_of_the_runtime_file_are_shown(tmp_path: Path, store: Store) -> None:
    now = int(time.time() * 1000)
    runtime = RuntimeFile(store.path)
    runtime.write(
        {
            "pid": 1,
            "state": "running",
            "heartbeat_at": now,
            "heartbeat_s": 5,
            "pauses": [
                {
                    "work": "ingest",
                    "condition": "store busy",
                    "since": now - 65_000,
                    "retry_at": now + 3000,
                    "detail": f"database is locked {HOSTILE}",
                },
                {"work": "watcher", "condition": "drop folder missing", "since": now},
            ],
            "reload_refused": {"at": now - 5000, "error": f"providers.crm.timeout_s: {HOSTILE}"},
        }
    )
    runtime.close()
    answer = await get_page(listener_for(store, churn_config(tmp_path, "http://x", 9)))
    parsed = Elements(answer.text)
    pauses = "".join(parsed.text)
    assert "store busy" in pauses and "ingest paused since" in pauses
    assert f"database is locked {HOSTILE}" in pauses and not parsed.tags("script")
    assert "drop folder missing" in pauses and "watcher paused" in pauses
    assert "reload refused" in pauses and "running on its previous config" in pauses
    assert f"providers.crm.timeout_s: {HOSTILE}" in pauses
    assert "needs attention" in pauses


async def test_a_store_that_cannot_be_read_is_a_503_page_saying_so(
    tmp_path: Path, store: Store
) -> None:
    listener = listener_for(store, churn_config(tmp_path, "http://x", 9))
    # Written by a newer dropsync, which lists its migrations too.
    sql(store.path, "INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    sql(store.path, "PRAGMA user_version = 999")
    answer = await get_page(listener)
    assert answer.status_code == 503
    assert "store unavailable" in answer.text and "SchemaTooNew" in answer.text
    assert str(tmp_path) not in answer.text  # the error's type, not its text (a path)
    assert answer.headers["cache-control"] == "no-store"


async def test_requests_together_share_one_read(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood costs one read of the store a second: the page is built once and served again,
    to requests that come together as to those that follow."""
    from dropsync.daemon.inbound import status_page

    reads: list[Path] = []

    def counted(path: Path, now: int, retain_days: float) -> PageData:
        reads.append(path)
        return read_page(path, now, retain_days)

    monkeypatch.setattr(status_page, "read_page", counted)
    listener = listener_for(store, churn_config(tmp_path, "http://x", 9))
    transport = httpx.ASGITransport(app=listener.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://status") as client:
        answers: list[httpx.Response] = []

        async def one() -> None:
            answers.append(await client.get("/"))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
    assert [a.status_code for a in answers] == [200] * 50 and len(reads) == 1
    first = answers[0]
    sql(store.path, "INSERT INTO providers (name, kind, updated_at) VALUES ('late', 'crm', 0)")
    again = await get_page(listener)
    assert first.text == again.text and 'data-provider="late"' not in again.text
    listener.status_page._page = None  # as when REUSE_S has passed
    assert 'data-provider="late"' in (await get_page(listener)).text


def test_paused_users_are_counted_by_state_and_reason_never_named(tmp_path: Path) -> None:
    """``status``'s paused users of a provider (when the store has them): a count, not names."""
    now = int(time.time() * 1000)
    summary = {
        "providers": [
            {
                "provider": "fav",
                "kind": "favourites",
                "state": "online",
                "pending": 3,
                "oldest_enqueued_at": now - 5000,
                "dead_letters": 0,
                "paused_users": [
                    {
                        "user": "alice@example.com",
                        "state": "auth-failed",
                        "reason": "HTTP 401",
                        "since": now,
                        "pending": 2,
                    },
                    {
                        "user": "bob@example.com",
                        "state": "auth-failed",
                        "reason": "HTTP 401",
                        "since": now,
                        "pending": 1,
                    },
                ],
            }
        ],
        "inbox_pending": 0,
        "files": {"processing": 0, "quarantined": 0, "done": 0},
        "recent_quarantined": [],
    }
    data = PageData(now=now, start=hour_start(now) - 23 * HOUR_MS, summary=summary)
    page = render(data, lambda text, complete=True: text)
    assert "paused users</b> 2 (auth-failed 2); 3 entries held" in page
    assert "2 × HTTP 401" in page and "example.com" not in page


def test_read_page_takes_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """A reason another program wrote as bytes that are not UTF-8 is shown, not a 500."""

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    path = tmp_path / "s.db"
    sql(path, "INSERT INTO providers (name, kind, updated_at) VALUES ('crm', 'crm', 0)")
    sql(
        path,
        "INSERT INTO dead_letters (provider, collection, key, updated_at, reason, created_at) "
        "VALUES ('crm', 'c', 'k', 1, CAST(X'ff41fe' AS TEXT), 1)",
    )
    data = read_page(path, int(time.time() * 1000), 30)
    assert data.error is None
    assert data.dead_letters["crm"][0]["reason"] == "\ufffdA\ufffd"


async def test_the_page_answers_while_another_program_holds_the_write_lock(
    tmp_path: Path, store: Store
) -> None:
    """The page reads on a connection of its own: a held write lock (``store busy``) does not
    hold it up."""
    fill(store.path, int(time.time() * 1000))
    holder = StoreLockHolder(store.path, "DELETE FROM providers")
    try:
        answer = await get_page(listener_for(store, churn_config(tmp_path, "http://x", 9)))
    finally:
        holder.release()
    assert answer.status_code == 200
    assert [a["data-provider"] for a in Elements(answer.text).tags("article", "provider")] == [
        "churn",
        "crm",
    ]


async def test_head_is_answered_and_other_methods_are_not(tmp_path: Path, store: Store) -> None:
    listener = listener_for(store, churn_config(tmp_path, "http://x", 9))
    transport = httpx.ASGITransport(app=listener.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://status") as client:
        head = await client.head("/")
        posted = await client.post("/", content=b"x")
        asked = await client.get("/?provider=<script>")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-frame-options"] == "DENY"
    assert posted.status_code == 405
    assert asked.status_code == 200 and "<script>" not in asked.text  # nothing is reflected


async def test_a_read_that_hangs_is_a_503_page_not_a_hung_request(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store on a file system that stopped answering: the page says so after
    READ_TIMEOUT_S; the read left behind ends by itself."""
    import threading

    from dropsync.daemon.inbound import status_page

    release = threading.Event()

    def hanging(*args: object) -> PageData:
        release.wait(30)
        raise OSError("gone")

    monkeypatch.setattr(status_page, "read_page", hanging)
    monkeypatch.setattr(status_page, "READ_TIMEOUT_S", 0.2)
    try:
        answer = await get_page(listener_for(store, churn_config(tmp_path, "http://x", 9)))
    finally:
        release.set()
    assert answer.status_code == 503
    assert "the store did not answer in time" in answer.text


def test_a_provider_the_running_config_does_not_name_is_shown_unconfigured(
    tmp_path: Path,
) -> None:
    """Removed or renamed by a reload: its entries wait, nothing sends them (not ``offline``
    with a next attempt, as if they were on their way)."""
    now = int(time.time() * 1000)
    row = {
        "kind": "crm",
        "state": "offline",
        "pending": 3,
        "oldest_enqueued_at": now - 5000,
        "next_attempt_at": now + 60_000,
        "dead_letters": 0,
    }
    rows = [{**row, "provider": "crm"}, {**row, "provider": "crm2"}]
    summary = {
        "providers": rows,
        "inbox_pending": 0,
        "files": {"processing": 0, "quarantined": 0, "done": 0},
        "recent_quarantined": [],
    }
    runtime = {"state": "running", "unconfigured": ["crm"], "unconfigured_not_listed": 0}
    data = PageData(now=now, start=hour_start(now) - 23 * HOUR_MS, summary=summary, runtime=runtime)
    page = render(data, lambda text, complete=True: text)
    start = page.index('<article class="card provider" data-provider="crm"')
    split = page.index('<article class="card provider" data-provider="crm2"')
    old, new = page[start:split], page[split:]
    assert "unconfigured</span>" in old and "next attempt" not in old
    assert "not configured in the running daemon" in old
    assert "offline</span>" in new and "next attempt" in new
    online = {**summary, "providers": [{**r, "state": "online"} for r in rows]}
    page = render(
        PageData(now=now, start=data.start, summary=online, runtime=runtime),
        lambda text, complete=True: text,
    )
    assert "needs attention" in page
