"""The callback outbox and incoming SMS: received parts put together, notifications claimed in due order with each
host's and user's share of the notifier's slots capped in the claim itself."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from asterisk_sendsms.app.urlpolicy import url_host
from asterisk_sendsms.core.model import CallbackJob, CallbackShares, CallbackState, IncomingPart
from asterisk_sendsms.store.db import Db
from asterisk_sendsms.store.views import incoming, view

__all__ = ["claim_callbacks", "store_incoming"]

# Notifications whose host is filled per claim (normally all that arrived since the last claim).
_HOST_FILL = 1000
# A claim with shares looks this many times its limit ahead, for rows of hosts and users with room, and looks
# again (leaving out those that filled up) at most this many times.
_CLAIM_WINDOW = 4
_CLAIM_ROUNDS = 3


def store_incoming(db: Db, part: IncomingPart, callback_url: str | None) -> str | None:
    text, received_at = part.text, part.received_at
    if part.total > 1:
        key = (part.transport, part.sender, part.reference, part.total)
        db.lock_keys(["incoming\x1f" + "\x1f".join(map(str, key))])
        db.execute("INSERT INTO incoming_parts VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                   (*key, part.sequence, part.recipient, part.text, part.received_at))
        where = "transport = ? AND sender = ? AND reference = ? AND total = ?"
        parts = db.execute(f"SELECT text, received_at FROM incoming_parts WHERE {where}"
                           " ORDER BY sequence", key).fetchall()
        if len(parts) < part.total:
            return None
        db.execute(f"DELETE FROM incoming_parts WHERE {where}", key)
        text, received_at = "".join(t for t, _ in parts), parts[0][1]
    incoming_id = str(uuid.uuid4())
    db.execute("INSERT INTO incoming VALUES (?,?,?,?,?,?)",
               (incoming_id, part.transport, part.sender, part.recipient, text, received_at))
    if callback_url:
        db.execute("INSERT INTO callbacks (sms_id, url, state, due_at, created_at, updated_at, kind)"
                   f" VALUES (?, ?, '{CallbackState.PENDING}', ?, ?, ?, 'incoming')",
                   (incoming_id, callback_url, part.received_at, part.received_at, part.received_at))
    return incoming_id


def claim_callbacks(db: Db, node: str, limit: int, now: float, lease: float, shares: CallbackShares | None
                    ) -> list[CallbackJob]:
    # Hosts are filled here, not where the outbox rows are made (those copy URLs in SQL), and before
    # the claim, so that every due row of a full host is left out of it.
    unnamed = db.execute(f"SELECT job_id, url FROM callbacks WHERE state = '{CallbackState.PENDING}' AND host = ''"
                         " LIMIT ?", (_HOST_FILL,)).fetchall()
    if unnamed:
        db.executemany("UPDATE callbacks SET host = ? WHERE job_id = ?",
                       [(url_host(url), job_id) for job_id, url in unnamed])
    rows = _fair_rows(db, limit, now, shares) if shares else db.execute(
        "SELECT job_id, sms_id, url, attempts, created_at, kind FROM callbacks"
        f" WHERE state = '{CallbackState.PENDING}' AND due_at <= ? ORDER BY due_at LIMIT ?" + db.claim_suffix,
        (now, limit)).fetchall()
    db.executemany("UPDATE callbacks SET due_at = ?, attempts = attempts + 1, claimed_by = ?, updated_at = ?"
                   " WHERE job_id = ?", [(now + lease, node, now, row[0]) for row in rows])
    # The subject is read in the same operation: one store round trip per batch, not per job.
    return [CallbackJob(job_id, sms_id, url, attempts + 1, created_at, kind,
                        incoming(db, sms_id) if kind == "incoming" else view(db, sms_id, False))
            for job_id, sms_id, url, attempts, created_at, kind in rows]


def _fair_rows(db: Db, limit: int, now: float, shares: CallbackShares) -> list[tuple[Any, ...]]:
    """Due notifications in due order, none for a host or user with its share in flight. Full hosts and users
    are left out in the statement; a window of due rows is then taken in order up to each share, and looked
    at again (without those that filled up) while it gave fewer than `limit` for that reason."""
    hosts, users = Counter(shares.hosts), Counter(shares.users)
    rows: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    for _ in range(_CLAIM_ROUNDS if shares.look_past_full else 1):
        full_hosts = sorted(h for h, n in hosts.items() if n >= shares.per_host)
        full_users = sorted(u for u, n in users.items() if u and n >= shares.per_user)
        where = "".join([
            f" AND host NOT IN ({', '.join('?' * len(full_hosts))})" if full_hosts else "",
            f" AND COALESCE((SELECT username FROM messages m WHERE m.sms_id = callbacks.sms_id), '')"
            f" NOT IN ({', '.join('?' * len(full_users))})" if full_users else ""])
        window = limit * _CLAIM_WINDOW
        candidates = db.execute(
            "SELECT job_id, sms_id, url, attempts, created_at, kind, host,"
            " COALESCE((SELECT username FROM messages m WHERE m.sms_id = callbacks.sms_id), '') FROM callbacks"
            f" WHERE state = '{CallbackState.PENDING}' AND due_at <= ?{where} ORDER BY due_at LIMIT ?"
            + db.claim_suffix,
            (now, *full_hosts, *full_users, window)).fetchall()
        for row in candidates:
            host, user = row[6], row[7]
            if row[0] in seen or hosts[host] >= shares.per_host or (user and users[user] >= shares.per_user):
                continue
            seen.add(row[0])
            hosts[host] += 1
            if user:
                users[user] += 1
            rows.append(row[:6])
            if len(rows) == limit:
                return rows
        if len(candidates) < window:
            break  # every due row was looked at
    return rows
