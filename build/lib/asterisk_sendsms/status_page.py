"""The status page, rendered by the daemon as plain HTML with SVG charts drawn here (no build step, no
script library): transports, queue, messages per minute over the last hour, outcomes, the latest messages
with their parts, pending notifications. It reloads itself every few seconds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from .lifecycle import State
from .model import MessageView
from .transports import TransportHealth

__all__ = ["render_status_page"]

REFRESH_SECONDS = 5
OUTCOME_COLOURS = {"delivered": "#2e7d32", "undelivered": "#c62828", "expired": "#ef6c00", "rejected": "#6a1b9a",
                   "failed": "#455a64"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
.ok{color:#2e7d32}.bad{color:#c62828}.tiles{display:flex;gap:1rem}
.tile{background:#fff;border:1px solid #ddd;padding:.6rem 1rem}.tile b{display:block;font-size:1.4rem}
svg{background:#fff;border:1px solid #ddd}
"""


def _rate_chart(per_minute: dict[int, int], now: float) -> str:
    """Messages accepted per minute over the last hour, as bars."""
    current = int(now // 60)
    counts = [per_minute.get(minute, 0) for minute in range(current - 59, current + 1)]
    top = max(counts) or 1
    width, height, bar = 600, 120, 10
    bars = "".join(
        f'<rect x="{i * bar}" y="{height - h}" width="{bar - 1}" height="{h}" fill="#1565c0">'
        f"<title>{count} at -{59 - i} min</title></rect>"
        for i, count in enumerate(counts) if (h := round(count / top * (height - 10))) > 0)
    return (f'<svg id="rate-chart" role="img" aria-label="messages per minute, last hour" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{bars}'
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


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def render_status_page(health: Sequence[TransportHealth], stats: dict[str, Any], latest: Sequence[MessageView],
                       now: float | None = None) -> str:
    now = time.time() if now is None else now
    states: dict[str, int] = stats["states"]
    transports = "".join(
        f"<tr><td>{escape(t.name)}</td><td>{escape(t.kind)}</td>"
        f"<td class='{'ok' if t.ready else 'bad'}'>{escape(t.state)}</td><td>{escape(t.detail)}</td></tr>"
        for t in health)
    rows = []
    for message in latest:
        parts = ", ".join(f"{escape(p.smsc_id or '-')}: {escape(p.state)}" for p in message.parts) or "-"
        rows.append(f"<tr><td>{_when(message.created_at)}</td><td><code>{escape(message.sms_id)}</code></td>"
                    f"<td>{escape(message.recipient)}</td><td>{escape(message.state.value)}</td>"
                    f"<td>{parts}</td><td>{escape(message.text[:60])}</td></tr>")
    in_flight = sum(states.get(s.value, 0) for s in (State.SUBMITTED,))
    tiles = (("waiting to be sent", stats["queue"]), ("awaiting receipts (1 h)", in_flight),
             ("delivered (1 h)", states.get("delivered", 0)), ("pending notifications", stats["pending_callbacks"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>asterisk-sendsms status</title><style>{STYLE}</style></head>
<body><h1>asterisk-sendsms</h1><p>updated {_when(now)}, every {REFRESH_SECONDS} s</p>
<div class="tiles">{"".join(f'<div class="tile"><b>{value}</b>{label}</div>' for label, value in tiles)}</div>
<h2>Transports</h2><table id="transports"><tr><th>name</th><th>kind</th><th>state</th><th>detail</th></tr>
{transports}</table>
<h2>Messages per minute, last hour</h2>{_rate_chart(stats["per_minute"], now)}
<h2>Outcomes, last hour</h2>{_outcome_chart(states)}
<h2>Latest messages</h2><table id="latest"><tr><th>time</th><th>SmsId</th><th>recipient</th><th>state</th>
<th>parts (SMSC id: receipt)</th><th>text</th></tr>{"".join(rows)}</table>
</body></html>"""
