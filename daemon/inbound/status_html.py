"""The status page's HTML (``daemon.inbound.status_page``): one document, no script, no external
asset. Its style sheet is inline and allowed by its hash in the Content-Security-Policy
(``CSP``), which allows nothing else: no script runs even if a text escaped its escaping.
The chart of deliveries per hour is an inline SVG.

Every text from the store, the config or the runtime file goes through ``_e``: HTML-
escaped (quotes too, for attributes), control and bidirectional-override characters
shown as U+FFFD, and, for what a provider or a file may have said, through the redactor.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dropsync.store.activity import HOUR_MS, HourCount
from dropsync.store.states import ProviderState

from ..clock import format_age
from ..names import shown
from ..process.runstate import describe, is_fresh

if TYPE_CHECKING:
    from .status_page import PageData

DAY_MS = 86_400_000
REASON_CHARS = 300  # what is shown of a file's error (a dead letter's is cut in SQL)
DELIVERED = ("accepted", "confirmed")
FAILED = ("failed", "rejected")
# A provider's state -> its badge's class (data never becomes a class name).
STATES: dict[str, str] = {
    ProviderState.ONLINE: "ok",
    ProviderState.BACKING_OFF: "warn",
    ProviderState.OFFLINE: "off",
    ProviderState.AUTH_FAILED: "bad",
}
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

STYLE = """
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--fg:#1c2330;--muted:#5b6472;
--line:#dfe3e8;--ok:#1e7f46;--warn:#a35f00;--bad:#c0262d;--off:#677080;--bar:#2f74c9}
@media (prefers-color-scheme:dark){:root{--bg:#121519;--card:#1c2027;--fg:#e4e7eb;
--muted:#9aa3ae;--line:#2f353e;--bar:#5a9ce8}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif}
header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 12px;padding:12px 16px;
background:var(--card);border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0}
header .meta{color:var(--muted);font-size:13px;margin-left:auto}
main{max-width:1120px;margin:0 auto;padding:12px}
h2{font-size:15px;margin:18px 4px 8px;color:var(--muted);text-transform:uppercase;
letter-spacing:.04em}
h3{font-size:13px;margin:12px 0 4px;color:var(--muted)}
.grid{display:grid;gap:12px;align-items:start;grid-template-columns:repeat(auto-fill,minmax(min(340px,100%),1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;
min-width:0;overflow-wrap:anywhere}
.card h3.name{font-size:17px;margin:0;color:var(--fg);display:flex;align-items:center;gap:8px;
flex-wrap:wrap}
.kind{color:var(--muted);font-weight:400;font-size:13px}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;
color:#fff;background:var(--off);white-space:nowrap}
.ok{background:var(--ok)}.warn{background:var(--warn)}.bad{background:var(--bad)}
.off{background:var(--off)}
.figures{display:grid;grid-template-columns:repeat(3,1fr);gap:4px;margin:10px 0 4px}
.figures div{background:var(--bg);border-radius:6px;padding:4px 8px}
.figures b{display:block;font-size:18px;font-variant-numeric:tabular-nums}
.figures span{font-size:12px;color:var(--muted)}
.note{margin:6px 0 0;font-size:13px}
.note b{color:var(--muted);font-weight:600}
.chart{display:block;width:100%;height:64px;margin-top:4px}
.chart .d{fill:var(--bar)}.chart .f{fill:var(--bad)}.chart .n{fill:var(--line)}
.chart .e{fill:transparent}
.chart .base{stroke:var(--line);stroke-width:1}
.axis{display:flex;justify-content:space-between;font-size:11px;color:var(--muted)}
.total{font-size:13px;color:var(--muted);margin:8px 0 0}
.legend{font-size:12px;color:var(--muted);margin:2px 0 0}
.key{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 5px 0 0}
.key.f{background:var(--bad);margin-left:12px}.key.d{background:var(--bar)}
ul.events{list-style:none;margin:0;padding:0}
ul.events li{border-top:1px solid var(--line);padding:5px 0;font-size:13px}
ul.events li:first-child{border-top:0}
.when{color:var(--muted);font-variant-numeric:tabular-nums;margin-right:6px}
.reason{display:block;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:12px;white-space:pre-wrap;margin-top:2px}
.alerts{display:grid;gap:8px;margin:4px 0 8px}
.alert{border-left:4px solid var(--warn);background:var(--card);border-radius:6px;padding:8px 12px}
.alert.bad{border-left-color:var(--bad)}
.alert strong{margin-right:6px}
.empty{color:var(--muted);font-size:13px;margin:4px 0}
footer{color:var(--muted);font-size:12px;padding:16px;text-align:center}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
@media (max-width:480px){main{padding:8px}.figures b{font-size:16px}}
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

Redact = Callable[..., str]


def _e(value: object) -> str:
    """``value`` as HTML text (and attribute value): escaped, controls shown as U+FFFD."""
    return html.escape(_UNSHOWN.sub("\ufffd", shown(str(value))), quote=True)


def _said(value: object, redact: Redact, *, cut: bool = False) -> str:
    """What a provider, a file or the daemon said (a reason, an error): redacted, escaped,
    ``…`` when ``cut``."""
    text = redact(str(value), complete=not cut)
    return _e(text) + ("…" if cut else "")


def _n(count: int, thing: str, things: str | None = None) -> str:
    """``1 record``, ``2 records``, ``1,000 records``."""
    return f"{count:,} {thing if count == 1 else things or thing + 's'}"


def _clock(ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ms / 1000))


def _age(ms: object, now: int) -> str:
    return format_age(ms, now) if isinstance(ms, int) else "—"


def _ago(ms: object, now: int) -> str:
    return f"{format_age(ms, now)} ago" if isinstance(ms, int) else "-"


def render(data: PageData, redact: Redact) -> str:
    """The whole page for ``data``."""
    summary = data.summary
    alerts = _alerts(data, redact)
    attention = bool(alerts) or summary is None
    providers: list[dict[str, Any]] = [] if summary is None else summary["providers"]
    unconfigured = (data.runtime or {}).get("unconfigured") or []
    if any(row["state"] != ProviderState.ONLINE for row in providers):
        attention = True
    if any(row["provider"] in unconfigured and row["pending"] for row in providers):
        attention = True  # entries nothing sends
    verdict = (
        '<span class="badge warn">needs attention</span>'
        if attention
        else '<span class="badge ok">working</span>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{data.refresh_s}">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{'(!) ' if attention else ''}dropsync status</title>",
        f"<style>{STYLE}</style></head><body>",
        f'<header><h1>dropsync</h1>{verdict}<span class="meta">read-only · updated '
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(data.now / 1000)))} · "
        f"refreshes every {data.refresh_s} s</span></header><main>",
    ]
    if alerts:
        parts.append(f'<section class="alerts" id="pauses">{"".join(alerts)}</section>')
    if summary is not None:
        hours = _hours_by_provider(data.hours, data.hours_shown)
        parts.append("<h2>Providers</h2>")
        if providers:
            parts.append('<section class="grid" id="providers">')
            for row in providers:
                dead = data.dead_letters.get(row["provider"], [])
                counts = hours.get(row["provider"], _no_hours(data.hours_shown))
                parts.append(_provider(row, counts, dead, data, redact))
            parts.append("</section>")
        else:
            parts.append('<p class="empty">No provider is configured.</p>')
        parts.append("<h2>Drop folder and inbox</h2>")
        parts.append(_files(summary, data.now, redact))
    parts.append(
        "</main><footer>Read-only: this page changes nothing. Keys, record bodies, user names "
        "and paths are not shown here; on the box, <code>dropsync status</code>, "
        "<code>dropsync dead-letters list</code> and <code>dropsync why</code> show them."
        "</footer></body></html>"
    )
    return "\n".join(parts)


def _alerts(data: PageData, redact: Redact) -> list[str]:
    """What the daemon waits for and a reload it refused (its runtime file, as ``status``
    reads it), and a store that cannot be read."""
    found = []
    if data.error is not None:
        found.append(
            f'<div class="alert bad"><strong>store unavailable</strong>{_e(data.error)}</div>'
        )
    runtime = data.runtime
    if runtime is None or runtime.get("state") == "stopped":
        return found
    if not is_fresh(runtime, data.now):
        for line in describe(runtime, data.now):
            found.append(f'<div class="alert bad">{_said(line, redact)}</div>')
        return found
    refused = runtime.get("reload_refused")
    if isinstance(refused, Mapping):
        at = refused.get("at")
        when = f" at {_e(_clock(at))}" if isinstance(at, int) else ""
        found.append(
            f'<div class="alert reload"><strong>reload refused</strong>{when}, running on its '
            f'previous config<span class="reason">{_said(refused.get("error", ""), redact)}'
            "</span></div>"
        )
    for pause in runtime.get("pauses", []):
        if not isinstance(pause, Mapping):
            continue
        since, retry_at = pause.get("since"), pause.get("retry_at")
        when = (
            f" since {_e(_clock(since))} ({_e(format_age(since, data.now))})"
            if isinstance(since, int)
            else ""
        )
        retry = (
            f", next try in {max(0, round((retry_at - data.now) / 1000))} s"
            if isinstance(retry_at, int)
            else ""
        )
        found.append(
            f'<div class="alert pause"><strong>{_e(pause.get("condition"))}</strong>'
            f"{_e(pause.get('work'))} paused{when}{retry}"
            f'<span class="reason">{_said(pause.get("detail", ""), redact)}</span></div>'
        )
    if runtime.get("pauses_not_listed"):
        found.append(f'<div class="alert">and {_e(runtime["pauses_not_listed"])} more pauses</div>')
    return found


class _Hour:
    __slots__ = ("failed", "items", "other", "requests")

    def __init__(self) -> None:
        self.items = self.requests = self.failed = self.other = 0


def _no_hours(count: int) -> list[_Hour]:
    return [_Hour() for _ in range(count)]


def _hours_by_provider(rows: Iterable[HourCount], count: int) -> dict[str, list[_Hour]]:
    by: dict[str, list[_Hour]] = {}
    for row in rows:
        if not 0 <= row.hour < count:
            continue
        hour = by.setdefault(row.provider, _no_hours(count))[row.hour]
        if row.state in DELIVERED:
            hour.items += row.items
            hour.requests += row.requests
        elif row.state in FAILED:
            hour.failed += row.requests
        else:
            hour.other += row.items  # dry-run
    return by


def _provider(
    row: Mapping[str, Any],
    hours: list[_Hour],
    dead: list[dict[str, Any]],
    data: PageData,
    redact: Redact,
) -> str:
    runtime = data.runtime or {}
    unconfigured = row["provider"] in (runtime.get("unconfigured") or [])
    state = "unconfigured" if unconfigured else str(row["state"])
    badge = STATES.get(state, "off")
    out = [
        f'<article class="card provider" data-provider="{_e(row["provider"])}">',
        f'<h3 class="name">{_e(row["provider"])} <span class="kind">{_e(row.get("kind", ""))}'
        f'</span> <span class="badge state {badge}">{_e(state)}</span></h3>',
        '<div class="figures">',
        f'<div><b class="pending">{row["pending"]:,}</b><span>pending</span></div>',
        f"<div><b>{_e(_age(row['oldest_enqueued_at'], data.now))}</b>"
        "<span>oldest pending</span></div>",
        f'<div><b class="dead-letters">{row["dead_letters"]:,}</b><span>dead letters</span></div>',
        "</div>",
    ]
    if unconfigured:
        out.append(
            '<p class="note"><b>not configured in the running daemon</b> (removed or renamed): '
            "its entries stay queued until a provider of this name is configured again</p>"
        )
    waiting = state in (ProviderState.BACKING_OFF, ProviderState.OFFLINE)
    if waiting and isinstance(row.get("next_attempt_at"), int):
        wait = max(0, round((row["next_attempt_at"] - data.now) / 1000))
        out.append(f'<p class="note"><b>next attempt</b> in {wait} s</p>')
    if state != ProviderState.ONLINE and row.get("last_error"):
        out.append(f'<p class="note"><b>last error</b> {_said(row["last_error"], redact)}</p>')
    if row.get("unconfirmed"):
        out.append(
            f'<p class="note"><b>unconfirmed</b> {_n(row["unconfirmed"], "batch", "batches")}, '
            f"{_n(row.get('unconfirmed_items') or 0, 'record')}: "
            f"<code>dropsync resync {_e(row['provider'])} --unconfirmed</code></p>"
        )
    if row.get("waiting"):
        out.append(f'<p class="note"><b>waiting</b> {_said(row["waiting"], redact)}</p>')
    out.extend(_paused_users(row.get("paused_users"), redact))
    out.append(_chart(row["provider"], hours, data))
    out.append("<h3>Recent dead letters</h3>")
    if dead:
        out.append('<ul class="events dead">')
        for letter in dead:
            status = f" · HTTP {_e(letter['http_status'])}" if letter.get("http_status") else ""
            reason = _said(letter["reason"], redact, cut=bool(letter["reason_cut"]))
            attempts = _n(int(letter["attempts"] or 0), "attempt")
            out.append(
                f'<li><span class="when">{_e(_ago(letter["created_at"], data.now))}</span>'
                f"{_e(letter['collection'])}{status} · {attempts}"
                f'<span class="reason">{reason}</span></li>'
            )
        out.append("</ul>")
    else:
        out.append('<p class="empty">none</p>')
    out.append("</article>")
    return "".join(out)


def _paused_users(users: object, redact: Redact) -> list[str]:
    """A provider's paused users (``status``'s ``paused_users``, when the store has them):
    how many, by state, and why; never who."""
    if not isinstance(users, list) or not users:
        return []
    states: dict[str, int] = {}
    reasons: dict[str, int] = {}
    held = 0
    for user in users:
        if not isinstance(user, Mapping):
            continue
        states[str(user.get("state"))] = states.get(str(user.get("state")), 0) + 1
        if user.get("reason"):
            reasons[str(user["reason"])] = reasons.get(str(user["reason"]), 0) + 1
        held += int(user.get("pending") or 0)
    by_state = ", ".join(f"{_e(state)} {count}" for state, count in sorted(states.items()))
    out = [
        f'<p class="note paused-users"><b>paused users</b> {len(users)} ({by_state}); '
        f"{_n(held, 'entry', 'entries')} held</p>"
    ]
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:3]:
        out.append(
            f'<p class="note"><span class="reason">{count} × {_said(reason, redact)}</span></p>'
        )
    return out


def _chart(provider: str, hours: list[_Hour], data: PageData) -> str:
    """Records delivered per hour (bars) and hours with failed requests (red marks below
    them), the last ``len(hours)`` local clock hours, the current one last. Each hour is a
    column with its figures as a tooltip (``<title>``)."""
    width, bar, top = 10, 8, 48
    tallest = max([hour.items for hour in hours] + [1])
    kept_from = data.now - int(data.retain_days * DAY_MS) if data.retain_days > 0 else None
    shapes = []
    for index, hour in enumerate(hours):
        begin = data.start + index * HOUR_MS
        x = index * width + 1
        label = (
            f"{_clock(begin)}–{_clock(begin + HOUR_MS)}: {_n(hour.items, 'record')} "
            f"in {_n(hour.requests, 'request')}"
        )
        if hour.failed:
            label += f", {hour.failed:,} failed"
        column = "e"
        if kept_from is not None and begin < kept_from:
            label += " (store.retain_days: finished requests this old are no longer kept)"
            column = "n"
        shapes.append(f'<g class="hour"><title>{_e(label)}</title>')
        shapes.append(f'<rect class="{column}" x="{x}" y="0" width="{bar}" height="{top}"/>')
        if hour.items:
            height = max(1.5, round(top * hour.items / tallest, 2))
            y = round(top - height, 2)
            shapes.append(f'<rect class="d" x="{x}" y="{y}" width="{bar}" height="{height}"/>')
        if hour.failed:
            shapes.append(f'<rect class="f" x="{x}" y="{top + 4}" width="{bar}" height="6"/>')
        shapes.append("</g>")
    delivered = sum(hour.items for hour in hours)
    if not any(hour.requests or hour.failed or hour.other for hour in hours):
        described = f"no finished request in the last {len(hours)} hours"
    else:
        described = (
            f"{_n(delivered, 'record')} delivered in "
            f"{_n(sum(hour.requests for hour in hours), 'request')} over the last "
            f"{len(hours)} hours"
        )
    failed = sum(hour.failed for hour in hours)
    if failed:
        described += f"; {_n(failed, 'request')} failed"
    dry = sum(hour.other for hour in hours)
    if dry:
        described += f"; {_n(dry, 'record')} in dry run"
    peak = f"; peak {tallest:,} an hour" if delivered else ""
    middle = data.start + (len(hours) // 2) * HOUR_MS
    span = len(hours) * width
    return (
        f"<h3>Deliveries per hour, last {len(hours)} h</h3>"
        f'<svg class="chart" data-provider="{_e(provider)}" viewBox="0 0 {span} 58" '
        f'preserveAspectRatio="none" role="img" aria-label="{_e(described)}">'
        f'<line class="base" x1="0" y1="{top + 0.5}" x2="{span}" y2="{top + 0.5}"/>'
        f"{''.join(shapes)}</svg>"
        f'<div class="axis"><span>{_e(_clock(data.start))}</span>'
        f"<span>{_e(_clock(middle))}</span><span>now</span></div>"
        f'<p class="total">{_e(described)}{peak}</p>'
        '<p class="legend"><span class="key d"></span>records delivered'
        '<span class="key f"></span>hours with failed requests</p>'
    )


def _files(summary: Mapping[str, Any], now: int, redact: Redact) -> str:
    files = summary["files"]
    out = [
        '<section class="card files" id="files"><div class="figures">',
        f"<div><b>{summary['inbox_pending']:,}</b><span>inbox pending</span></div>",
        f"<div><b>{files['processing']:,}</b><span>files in progress</span></div>",
        f"<div><b>{files['quarantined']:,}</b><span>files quarantined</span></div>",
        "</div>",
        f'<p class="total">{files["done"]:,} files done</p>',
        "<h3>Recently quarantined files</h3>",
    ]
    recent = summary["recent_quarantined"]
    if not recent:
        out.append('<p class="empty">none</p>')
    else:
        out.append('<ul class="events quarantined">')
        for row in recent:
            error = str(row.get("error") or "no reason recorded")
            reason = _said(error[:REASON_CHARS], redact, cut=len(error) > REASON_CHARS)
            out.append(
                f'<li><span class="when">{_e(_ago(row.get("finished_at"), now))}</span>'
                f"{_e(row['collection'])}/{_e(row['name'])}"
                f'<span class="reason">{reason}</span></li>'
            )
        out.append("</ul>")
    out.append("</section>")
    return "".join(out)
