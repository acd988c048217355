"""The status page, rendered by the daemon as plain HTML with SVG charts drawn here (no build step, no
script library). It answers an operator's "why": transports, queue, messages per minute over the last hour
on a dated time axis, outcomes and their most frequent reasons, pending notifications with their last error
and next try, and the messages (searched by SmsId or recipient, filtered by state, a page at a time) with the
reason each failed. Message texts are masked unless `[status] show_text` is set."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

from asterisk_sendsms.app.transport import TransportHealth
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import MessageView, PendingCallback
from asterisk_sendsms.core.traffic import Priority

__all__ = ["PAGE_SIZE", "Listing", "render_status_page"]

REFRESH_SECONDS = 5
PAGE_SIZE = 20
OUTCOME_COLOURS = {State.DELIVERED: "#2e7d32", State.ACKNOWLEDGED: "#66bb6a", State.SENT: "#9ccc65",
                   State.UNDELIVERED: "#c62828", State.EXPIRED: "#ef6c00", State.REJECTED: "#6a1b9a",
                   State.FAILED: "#455a64"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
.ok{color:#2e7d32}.bad{color:#c62828}.tiles{display:flex;gap:1rem}
.tile{background:#fff;border:1px solid #ddd;padding:.6rem 1rem}.tile b{display:block;font-size:1.4rem}
svg{background:#fff;border:1px solid #ddd}form{margin:.6rem 0}.masked{color:#888}.reason{color:#c62828}
"""


def _rate_chart(per_minute: dict[int, int], now: float) -> str:
    """Messages accepted per minute over the last hour, as bars over a time axis in the daemon's zone."""
    current = int(now // 60)
    counts = [per_minute.get(minute, 0) for minute in range(current - 59, current + 1)]
    top = max(counts) or 1
    width, plot, height, bar = 600, 120, 140, 10
    bars = "".join(
        f'<rect x="{i * bar}" y="{plot - h}" width="{bar - 1}" height="{h}" fill="#1565c0">'
        f"<title>{count} at {_clock((current - 59 + i) * 60)}</title></rect>"
        for i, count in enumerate(counts) if (h := round(count / top * (plot - 10))) > 0)
    ticks = "".join(
        f'<line x1="{i * bar}" y1="{plot}" x2="{i * bar}" y2="{plot + 4}" stroke="#666"/>'
        f'<text class="tick" x="{min(max(i * bar, 16), width - 16)}" y="{height - 4}" font-size="11" '
        f'text-anchor="middle">{_clock((current - 59 + i) * 60)}</text>'
        for i in range(0, 60, 15)) + (f'<text class="tick" x="{width - 16}" y="{height - 4}" font-size="11" '
                                      f'text-anchor="middle">{_clock(now)}</text>')
    return (f'<svg id="rate-chart" role="img" aria-label="messages per minute, last hour" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{bars}'
            f'<line x1="0" y1="{plot}" x2="{width}" y2="{plot}" stroke="#666"/>{ticks}'
            f'<text x="4" y="12" font-size="11">peak {top}/min ({top / 60:.1f}/s)</text></svg>')


def _outcome_chart(states: dict[str, int]) -> str:
    """Final outcomes of the last hour's messages, as one stacked bar with a legend."""
    total = sum(states.get(s, 0) for s in OUTCOME_COLOURS) or 1
    x, parts, legend = 0.0, [], []
    for index, (state, colour) in enumerate(OUTCOME_COLOURS.items()):
        count = states.get(state, 0)
        share = count / total * 600
        if share:
            parts.append(f'<rect x="{x:.1f}" y="0" width="{share:.1f}" height="24" fill="{colour}">'
                         f"<title>{state}: {count}</title></rect>")
        x += share
        legend.append(f'<text x="{index * 120}" y="44" font-size="12" fill="{colour}">{state} {count}</text>')
    return (f'<svg id="outcome-chart" role="img" aria-label="delivery outcomes" width="600" height="52" '
            f'viewBox="0 0 600 52">{"".join(parts)}{"".join(legend)}</svg>')


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%H:%M")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole >= 3600:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 60} min {whole % 60} s"


def _zone(timestamp: float) -> str:
    """The date and the daemon's time zone, which every time on the page is in."""
    local = datetime.fromtimestamp(timestamp).astimezone()
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d}, {local.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def _target(url: str) -> str:
    """Where a notification goes, without its query (which may carry the application's tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True, slots=True)
class Listing:
    """Which messages the page lists: a search (an SmsId or a recipient prefix), a state, a page (from 1)."""

    search: str = ""
    state: str = ""
    page: int = 1

    def link(self, page: int) -> str:
        query = {k: v for k, v in (("q", self.search), ("state", self.state)) if v}
        return "?" + urlencode({**query, "page": str(page)})


def _text(message: MessageView, show_text: bool) -> str:
    if show_text:
        return escape(message.text[:60])
    return f'<span class="masked">hidden ({len(message.text)} characters)</span>'


def _message_rows(messages: Sequence[MessageView], show_text: bool) -> str:
    rows = []
    for message in messages:
        parts = ", ".join(f"{escape(p.smsc_id or '-')}: {escape(p.state)}" for p in message.parts) or "-"
        reason = escape(f"{message.error_code} {message.error_text}".strip())
        reason_cell = f"<td class='reason'>{reason}</td>" if reason else "<td>-</td>"
        rows.append(f"<tr><td>{_when(message.created_at)}</td><td><code>{escape(message.sms_id)}</code></td>"
                    f"<td>{escape(message.recipient)}</td><td>{escape(message.state.value)}</td>{reason_cell}"
                    f"<td>{parts}</td><td>{escape(message.callback_state or '-')}</td>"
                    f"<td>{_text(message, show_text)}</td></tr>")
    return "".join(rows) or "<tr><td colspan='8'>no message matches</td></tr>"


def _search_form(listing: Listing) -> str:
    options = "".join(f"<option value='{state.value}'{' selected' if state.value == listing.state else ''}>"
                      f"{state.value}</option>" for state in State)
    return (f"<form id='search' method='get' action='/status'><input name='q' value='{escape(listing.search)}' "
            "placeholder='SmsId or recipient (prefix)' size='40'> <select name='state'><option value=''>any state"
            f"</option>{options}</select> <button>search</button></form>")


def _quota_use(quotas: Sequence[tuple[str, int, int, float]]) -> str:
    return " · ".join(f"{period}: {used} of {quota}, resets {_when(resets)}"
                      for period, used, quota, resets in quotas) or "-"


def render_status_page(health: Sequence[TransportHealth], stats: dict[str, Any], messages: Sequence[MessageView],
                       pending: Sequence[PendingCallback], listing: Listing, show_text: bool,
                       now: float | None = None) -> str:
    now = time.time() if now is None else now
    states: dict[str, int] = stats["states"]
    transports = "".join(
        f"<tr><td>{escape(t.name)}</td><td>{escape(t.kind)}</td>"
        f"<td class='{'ok' if t.ready else 'bad'}'>{escape(t.state)}</td><td>{escape(t.detail)}</td>"
        f"<td>{' · '.join(f'{p} {n} ({_age(now - since)})' for p, n, since in t.waiting) or '-'}</td></tr>"
        for t in health)
    reasons = "".join(f"<tr><td class='reason'>{escape(code)}</td><td>{count}</td></tr>"
                      for code, count in stats["failure_reasons"]) or "<tr><td colspan='2'>none</td></tr>"
    notifications = "".join(
        f"<tr><td><code>{escape(job.sms_id)}</code></td><td>{escape(_target(job.url))}</td><td>{job.attempts}</td>"
        f"<td class='reason'>{escape(job.last_error) or '-'}</td><td>{_when(job.due_at)}</td></tr>"
        for job in pending) or "<tr><td colspan='5'>none</td></tr>"
    in_flight = states.get(State.SUBMITTED.value, 0)
    waiting: dict[str, tuple[int, float]] = stats["classes"]
    classes = "".join(
        f"<tr><td>{name}</td><td>{waiting[name][0]}</td><td>{_age(now - waiting[name][1])}</td></tr>"
        if name in waiting else f"<tr><td>{name}</td><td>0</td><td>-</td></tr>" for name in map(str, Priority))
    limits = "".join(
        f"<tr><td>{escape(name)}</td><td>{f'{rate:g}/s' if rate else '-'}</td><td>{_quota_use(quotas)}</td></tr>"
        for name, rate, quotas in stats.get("limits", ())) or "<tr><td colspan='3'>none</td></tr>"
    scheduled, next_due = stats["scheduled"]
    tiles = (("waiting to be sent", stats["queue"]), ("scheduled", scheduled), ("awaiting receipts (1 h)", in_flight),
             ("delivered (1 h)", states.get(State.DELIVERED, 0)), ("pending notifications", stats["pending_callbacks"]),
             ("opted out", stats["optouts"]))
    pages = []
    if listing.page > 1:
        pages.append(f"<a id='newer' href='{escape(listing.link(listing.page - 1))}'>newer</a>")
    if len(messages) == PAGE_SIZE:
        pages.append(f"<a id='older' href='{escape(listing.link(listing.page + 1))}'>older</a>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>asterisk-sendsms status</title><style>{STYLE}</style></head>
<body><h1>asterisk-sendsms</h1><p>updated {_when(now)} ({escape(_zone(now))}), every {REFRESH_SECONDS} s</p>
<div class="tiles">{"".join(f'<div class="tile"><b>{value}</b>{label}</div>' for label, value in tiles)}</div>
<h2>Waiting to be sent, by traffic class</h2><table id="classes"><tr><th>class</th><th>messages</th>
<th>oldest waiting</th></tr>{classes}</table>
<p id="scheduled">{scheduled} scheduled{f", the next due {_when(next_due)}" if next_due else ""}</p>
<h2>Users' limits</h2><table id="limits"><tr><th>user</th><th>max rate</th><th>quota use</th></tr>{limits}</table>
<h2>Transports</h2><table id="transports"><tr><th>name</th><th>kind</th><th>state</th><th>detail</th>
<th>handed over, by class (longest wait)</th></tr>
{transports}</table>
<h2>Messages per minute, last hour ({escape(_zone(now))})</h2>{_rate_chart(stats["per_minute"], now)}
<h2>Outcomes, last hour</h2>{_outcome_chart(states)}
<h2>Why messages were not delivered, last hour</h2><table id="reasons"><tr><th>reason</th><th>messages</th></tr>
{reasons}</table>
<h2>Pending notifications</h2><table id="notifications"><tr><th>SmsId</th><th>to</th><th>attempts</th>
<th>last error</th><th>next try</th></tr>{notifications}</table>
<h2>Messages</h2>{_search_form(listing)}<table id="latest"><tr><th>time</th><th>SmsId</th><th>recipient</th>
<th>state</th><th>reason</th><th>parts (SMSC id: receipt)</th><th>notification</th><th>text</th></tr>
{_message_rows(messages, show_text)}</table><p id="pages">page {listing.page} {" ".join(pages)}</p>
</body></html>"""
