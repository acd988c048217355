"""What enters the dispatch queue, and when: accepting messages (opt-outs, quotas, a user's max_rate turns, SendAt),
the bulk users' turns (fair ranks), making scheduled messages due, and claiming due messages for dispatch."""

from __future__ import annotations

from asterisk_sendsms.app.limits import Limits, quota_refusal, turns
from asterisk_sendsms.core.errors import RecipientOptedOut, RequestError
from asterisk_sendsms.core.lifecycle import SOURCES, UNSENT_EXPIRY, State
from asterisk_sendsms.core.model import NewMessage, OutboundMessage
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.store.db import Db
from asterisk_sendsms.store.ops import finish
from asterisk_sendsms.store.schema import in_states

__all__ = ["accept_all", "claim", "quota_used"]

# Scheduled messages made due per claim, at most: 10,000 due at one second go in a few claims, none long.
RELEASE_BATCH = 2000
_WAITING = in_states("state", SOURCES[State.QUEUED])  # accepted, or queued again: waiting to be claimed


def claim(db: Db, node: str, limit: int, now: float, lease: float, up_to: Priority, limits: Limits
          ) -> list[OutboundMessage]:
    """Make scheduled messages whose time came due, expire those past their validity, and claim up to `limit`."""
    _release(db, now, limits)
    due = f"{_WAITING} AND due_at <= ?"
    for (sms_id,) in db.execute(f"SELECT sms_id FROM messages WHERE {due} AND expires_at <= ? LIMIT ?"
                                + db.claim_suffix, (now, now, limit)).fetchall():
        finish(db, sms_id, State.EXPIRED, *UNSENT_EXPIRY, now)
    # One statement for the whole batch. The lease is the due time: a node that dies holding the message gives
    # it up when it passes. The order of the messages_dispatch index: by class, bulk users in turn (fair_rank),
    # oldest first.
    rows = db.execute(
        "UPDATE messages SET state = ?, due_at = ?, claimed_by = ?, updated_at = ?,"
        " queued_at = COALESCE(queued_at, ?) WHERE sms_id IN"
        f" (SELECT sms_id FROM messages WHERE {due} AND expires_at > ? AND priority <= ?"
        f" ORDER BY priority, fair_rank, due_at LIMIT ?{db.claim_suffix})"
        " RETURNING sms_id, sender, recipient, text, attempts, expires_at, priority, fair_rank, created_at,"
        " validity_period",
        (State.QUEUED.value, now + lease, node, now, now, now, now, up_to.rank, limit)).fetchall()
    rows.sort(key=lambda row: row[6:9])  # RETURNING keeps no order
    return [OutboundMessage(sms_id, sender, recipient, text, attempts, expires_at, Priority.of_rank(rank),
                            fair_rank, validity is not None)
            for sms_id, sender, recipient, text, attempts, expires_at, rank, fair_rank, _, validity in rows]


_MESSAGE_COLUMNS = ("sms_id", "username", "sender", "recipient", "text", "coding", "part_count", "state",
                    "callback_url", "created_at", "updated_at", "expires_at", "due_at", "priority", "fair_rank",
                    "validity_period", "send_at", "paced")


def accept_all(db: Db, items: list[tuple[NewMessage, Limits]]) -> list[RequestError | None]:
    """Insert the messages their users' quotas leave room for; the others' results are their refusals (a refusal
    rolls nothing back: one user over quota must not cost a whole group commit its batch)."""
    limits = items[0][1]
    messages = [message for message, _ in items]
    refusals = _opted_out(db, messages, limits)
    if limits.users:
        refusals.update(_count_quotas(db, [m for m in messages if m.sms_id not in refusals], limits))
    admitted = [m for m in messages if m.sms_id not in refusals] if refusals else messages
    if not admitted:
        return [refusals.get(m.sms_id) for m in messages]
    held = _held(db, admitted, limits)
    # Held past its accept: scheduled, out of the dispatch queue and of the bulk turns until it is released.
    later = {m.sms_id for m in admitted if m.sms_id in held and held[m.sms_id][0] > m.created_at} if held else set()
    ranks = _fair_ranks(db, [(m.sms_id, m.username) for m in admitted
                             if m.priority is Priority.BULK and m.sms_id not in later], admitted[0].created_at)
    # Comprehensions: this runs for every message accepted, on the writer thread every accept waits for. Most
    # messages are neither scheduled nor paced and leave those two columns to their defaults.
    accepted, scheduled = State.ACCEPTED.value, State.SCHEDULED.value
    db.insert_many("messages", _MESSAGE_COLUMNS[:-2], [
        (m.sms_id, m.username, m.sender, m.recipient, m.text, m.coding.value, m.part_count, accepted,
         m.callback_url, m.created_at, m.created_at, m.expires_at, m.created_at, m.priority.rank,
         ranks.get(m.sms_id, 0) if ranks else 0, m.validity_period) for m in admitted if m.sms_id not in held])
    if held:
        db.insert_many("messages", _MESSAGE_COLUMNS, [
            (m.sms_id, m.username, m.sender, m.recipient, m.text, m.coding.value, m.part_count,
             scheduled if m.sms_id in later else accepted, m.callback_url, m.created_at, m.created_at,
             m.expires_at, due_at, m.priority.rank, ranks.get(m.sms_id, 0), m.validity_period, m.send_at, paced)
            for m in admitted if m.sms_id in held for due_at, paced in (held[m.sms_id],)])
    return [refusals.get(m.sms_id) for m in messages] if refusals else [None] * len(messages)


def _opted_out(db: Db, messages: list[NewMessage], limits: Limits) -> dict[str, RequestError]:
    """The messages refused because their recipient opted out: one query for the whole batch (most find none)."""
    refusable = [m for m in messages if m.priority in limits.optout_classes] if limits.optout_classes else ()
    # An empty list (a gateway nobody texted STOP yet) answers this in a few microseconds.
    if not refusable or db.execute("SELECT 1 FROM optouts LIMIT 1").fetchone() is None:
        return {}
    scopes: dict[str, set[str]] = {}
    for number, scope in db.select_with_values("SELECT number, scope FROM optouts WHERE number IN (VALUES {values})",
                                               [(number,) for number in sorted({m.recipient for m in refusable})]):
        scopes.setdefault(number, set()).add(scope)
    return {m.sms_id: RecipientOptedOut(m.recipient) for m in refusable
            if m.recipient in scopes and limits.opted_out(m, scopes[m.recipient])}


def _count_quotas(db: Db, messages: list[NewMessage], limits: Limits) -> dict[str, RequestError]:
    """Count the messages' parts against their users' quotas, in order; those that do not fit are refused."""
    refusals: dict[str, RequestError] = {}
    by_user: dict[str, list[NewMessage]] = {}
    for message in messages:
        if message.username in limits.users:
            by_user.setdefault(message.username, []).append(message)
    for username, own in sorted(by_user.items()):
        counters = limits.quota_keys(username, own[0].created_at)
        if not counters:
            continue  # a max_rate alone
        db.lock_keys([_user_key(username)])  # two nodes counting for one user take turns
        used = {key: quota_used(db, username, key) for key, _, _, _ in counters}
        for message in own:
            over = next((c for c in counters if used[c[0]] + message.part_count > c[1]), None)
            if over is not None:
                key, quota, period, resets = over
                refusals[message.sms_id] = quota_refusal(username, period, quota, resets, limits.zone)
                continue
            for key, _, _, _ in counters:
                used[key] += message.part_count
        db.insert_many("quota_use", ("username", "period", "used"), [(username, key, n) for key, n in used.items()],
                       " ON CONFLICT (username, period) DO UPDATE SET used = excluded.used")
    return refusals


def quota_used(db: Db, username: str, key: str) -> int:
    row = db.execute("SELECT used FROM quota_use WHERE username = ? AND period = ?", (username, key)).fetchone()
    return int(row[0]) if row else 0


def _held(db: Db, messages: list[NewMessage], limits: Limits) -> dict[str, tuple[float, int]]:
    """The messages that may not leave at once, with their due time and whether their user's max_rate gave it:
    their SendAt (paced when it comes), or their user's next turn (one that came already is due now)."""
    held = {m.sms_id: (m.send_at, 0) for m in messages if m.send_at is not None}
    by_user: dict[str, list[NewMessage]] = {}
    for message in messages if limits.users else ():
        if message.send_at is None and limits.rate(message.username):
            by_user.setdefault(message.username, []).append(message)
    for username, own in sorted(by_user.items()):
        slots = _take_turns(db, username, limits, [m.created_at for m in own], own[0].created_at)
        held.update((m.sms_id, (slot, 1)) for m, slot in zip(own, slots, strict=True))
    return held


def _take_turns(db: Db, username: str, limits: Limits, earliest: list[float], now: float) -> list[float]:
    """Due times one 1/max_rate apart after the user's last (all nodes share the user's turns)."""
    rate = limits.rate(username)
    assert rate is not None
    db.lock_keys([_user_key(username)])
    row = db.execute("SELECT next_free FROM user_turns WHERE username = ?", (username,)).fetchone()
    next_free = row[0] if row else 0.0
    if next_free > now + 1.0 / rate:
        # Turns ahead belong to messages still scheduled, or to ones cancelled since: those are given back, and
        # the user's next message follows the last turn still taken.
        (last,) = db.execute(f"SELECT MAX(due_at) FROM messages WHERE {in_states('state', [State.SCHEDULED])}"
                             " AND paced = 1 AND username = ?", (username,)).fetchone()
        next_free = min(next_free, now if last is None else last + 1.0 / rate)
    slots, next_free = turns(next_free, rate, earliest)
    db.insert_many("user_turns", ("username", "next_free"), [(username, next_free)],
                   " ON CONFLICT (username) DO UPDATE SET next_free = excluded.next_free")
    return slots


def _user_key(username: str) -> str:
    """The advisory lock of a user's quota counters and turns: one key, so that two transactions counting and
    pacing for one user cannot each hold one and wait for the other."""
    return f"user\x1f{username}"


def _release(db: Db, now: float, limits: Limits) -> None:
    """Scheduled messages whose time came join the dispatch queue, except that one whose user has a max_rate
    waits on for its user's turn (its SendAt came; its turn is given now)."""
    rows = db.execute("SELECT sms_id, username, priority, paced, due_at FROM messages"
                      f" WHERE {in_states('state', [State.SCHEDULED])} AND due_at <= ? ORDER BY due_at LIMIT ?"
                      + db.claim_suffix, (now, RELEASE_BATCH)).fetchall()
    if not rows:
        return
    ready: list[tuple[str, str, int]] = []
    to_pace: dict[str, list[tuple[str, int, float]]] = {}
    for sms_id, username, rank, paced, due_at in rows:
        if paced or not limits.rate(username):
            ready.append((sms_id, username, rank))
        else:
            to_pace.setdefault(username, []).append((sms_id, rank, due_at))
    later: list[tuple[str, float]] = []
    for username, own in sorted(to_pace.items()):
        slots = _take_turns(db, username, limits, [due_at for _, _, due_at in own], now)
        for (sms_id, rank, _), slot in zip(own, slots, strict=True):
            if slot <= now:
                ready.append((sms_id, username, rank))
            else:
                later.append((sms_id, slot))
    if later:
        db.with_values("UPDATE messages SET due_at = CAST(v.column2 AS DOUBLE PRECISION), paced = 1"
                       " FROM (VALUES {values}) AS v WHERE messages.sms_id = v.column1", later)
    ranks = _fair_ranks(db, [(sms_id, username) for sms_id, username, rank in ready
                             if rank == Priority.BULK.rank], now)
    db.with_values(f"UPDATE messages SET state = '{State.ACCEPTED.value}', fair_rank = CAST(v.column2 AS BIGINT),"
                   " updated_at = CAST(v.column3 AS DOUBLE PRECISION) FROM (VALUES {values}) AS v"
                   f" WHERE messages.sms_id = v.column1 AND {in_states('messages.state', SOURCES[State.ACCEPTED])}",
                   [(sms_id, ranks.get(sms_id, 0), now) for sms_id, _, _ in ready])


def _fair_ranks(db: Db, bulk: list[tuple[str, str]], now: float) -> dict[str, int]:
    """Bulk users take turns: each user's bulk messages are numbered on from the user's last number, or from
    the next number to be sent if that is later, and the queue (and each transport's waiting submits) is served
    by number. A campaign of 50,000 queued before another user's 100 then shares the SMSC with them one for one
    instead of sending all of its own first."""
    if not bulk:
        return {}
    # The next number to be sent: claimed messages wait for their transport in this order too. Those waiting to be
    # tried again later do not count (one failing message would otherwise let newcomers go first for long).
    (frontier,) = db.execute(
        f"SELECT MIN(fair_rank) FROM messages WHERE {_WAITING} AND priority = ?"
        " AND (due_at <= ? OR claimed_by IS NOT NULL)", (Priority.BULK.rank, now)).fetchone()
    by_user: dict[str, list[str]] = {}
    for sms_id, username in bulk:
        by_user.setdefault(username, []).append(sms_id)
    ranks: dict[str, int] = {}
    last_ranks: list[tuple[str, int]] = []
    for user, sms_ids in sorted(by_user.items()):
        row = db.execute("SELECT last_rank FROM fair_shares WHERE username = ?", (user,)).fetchone()
        first = max(row[0] + 1 if row else 1, frontier or 1)
        ranks.update((sms_id, first + offset) for offset, sms_id in enumerate(sms_ids))
        last_ranks.append((user, first + len(sms_ids) - 1))
    db.insert_many("fair_shares", ("username", "last_rank"), last_ranks,
                   " ON CONFLICT (username) DO UPDATE SET last_rank = excluded.last_rank")
    return ranks
