"""What the store shows of its rows: a message's view (with its parts and history put together from the
happy path's timestamps and the history table), an incoming SMS, the message list and the status page's counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.lifecycle import FAILURE_STATES, SOURCES, State
from asterisk_sendsms.core.model import CallbackState, HistoryEntry, IncomingView, MessageView, PartView
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.store.db import Db
from asterisk_sendsms.store.schema import in_states

__all__ = ["incoming", "list_messages", "stats", "view"]

_VIEW_COLUMNS = ("sms_id, username, sender, recipient, text, coding, part_count, state, transport, attempts,"
                 " error_code, error_text, callback_url, created_at, updated_at, queued_at, submitted_at, done_at,"
                 " priority, send_at")
TOP_REASONS = 5


def list_messages(db: Db, username: str | None, state: State | None, recipient: str | None, since: float | None,
              limit: int, offset: int, priority: Priority | None) -> list[MessageView]:
    where: list[str] = ["created_at >= ?"]
    params: list[float | str | int] = [since or 0.0]
    for column, value in (("username", username), ("state", state.value if state else None),
                          ("priority", priority.rank if priority else None)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if recipient:
        where.append("recipient LIKE ? ESCAPE '\\'")
        params.append(recipient.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    rows = db.execute(f"SELECT {_VIEW_COLUMNS}, (SELECT c.state FROM callbacks c WHERE c.sms_id ="
                      " messages.sms_id ORDER BY c.job_id DESC LIMIT 1) FROM messages"
                      f" WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ? OFFSET ?",
                      (*params, limit, offset)).fetchall()
    return [_message_view(row, row[-1], (), ()) for row in rows]


def stats(db: Db, since: float) -> dict[str, Any]:
    states = dict(db.execute("SELECT state, COUNT(*) FROM messages WHERE created_at >= ? GROUP BY state",
                             (since,)).fetchall())
    per_minute = dict(db.execute(
        f"SELECT {db.minute('created_at')}, COUNT(*) FROM messages WHERE created_at >= ?"
        " GROUP BY 1", (since,)).fetchall())
    classes = {Priority.of_rank(rank).value: (count, oldest) for rank, count, oldest in db.execute(
        "SELECT priority, COUNT(*), MIN(created_at) FROM messages"
        f" WHERE {in_states('state', SOURCES[State.QUEUED])} GROUP BY priority").fetchall()}
    queue = sum(count for count, _ in classes.values())
    scheduled, next_due = db.execute("SELECT COUNT(*), MIN(due_at) FROM messages"
                                     f" WHERE {in_states('state', [State.SCHEDULED])}").fetchone()
    callbacks = db.execute(f"SELECT COUNT(*) FROM callbacks WHERE state = '{CallbackState.PENDING}'").fetchone()[0]
    optouts = db.execute("SELECT COUNT(*) FROM optouts").fetchone()[0]
    reasons = db.execute(
        "SELECT error_code, COUNT(*) FROM messages WHERE updated_at >= ? AND error_code <> ''"
        f" AND {in_states('state', FAILURE_STATES)} GROUP BY error_code ORDER BY 2 DESC, 1 LIMIT ?",
        (since, TOP_REASONS)).fetchall()
    return {"states": states, "per_minute": per_minute, "queue": queue, "classes": classes,
            "scheduled": (scheduled, next_due),
            "pending_callbacks": callbacks, "optouts": optouts,
            "failure_reasons": [(code, count) for code, count in reasons]}


def incoming(db: Db, incoming_id: str) -> IncomingView | None:
    row = db.execute("SELECT incoming_id, transport, sender, recipient, text, received_at FROM incoming"
                     " WHERE incoming_id = ?", (incoming_id,)).fetchone()
    return IncomingView(*row) if row else None


def view(db: Db, sms_id: str, detail: bool = True) -> MessageView | None:
    row = db.execute(f"SELECT {_VIEW_COLUMNS} FROM messages WHERE sms_id = ?", (sms_id,)).fetchone()
    if row is None:
        return None
    if not detail:
        return _message_view(row, None, (), ())
    parts = tuple(PartView(idx + 1, smsc_id, state, error_code, updated_at)
                  for idx, smsc_id, state, error_code, updated_at
                  in db.execute("SELECT idx, smsc_id, state, error_code, updated_at FROM parts WHERE sms_id = ?"
                                " ORDER BY idx", (sms_id,)).fetchall())
    queued_at, submitted_at, done_at = row[15:18]
    send_at = row[19]
    steps = [HistoryEntry(row[13], State.ACCEPTED, f"by {row[1]}") if send_at is None else
             HistoryEntry(row[13], State.SCHEDULED, f"by {row[1]}, to leave at {_iso(send_at)}")]
    if queued_at is not None:
        steps.append(HistoryEntry(queued_at, State.QUEUED, ""))
    if submitted_at is not None:
        ids = ", ".join(p.smsc_id or "-" for p in parts)
        steps.append(HistoryEntry(submitted_at, State.SUBMITTED, f"via {row[8]}, SMSC id {ids}"))
    events = [HistoryEntry(at, State(state), detail) for at, state, detail
              in db.execute("SELECT at, state, detail FROM history WHERE sms_id = ?"
                            f" ORDER BY {db.history_order}", (sms_id,)).fetchall()]
    if done_at is not None:
        events.append(HistoryEntry(done_at, State(row[7]), f"{row[10]} {row[11]}".strip()))
    # Steps first on equal times: a receipt can be recorded in the same instant as its submit.
    history = tuple(sorted(steps + events, key=lambda entry: entry.at))
    callback = db.execute("SELECT state FROM callbacks WHERE sms_id = ? ORDER BY job_id DESC LIMIT 1",
                          (sms_id,)).fetchone()
    return _message_view(row, callback[0] if callback else None, parts, history)


def _message_view(row: tuple[Any, ...], callback_state: str | None, parts: tuple[PartView, ...],
                  history: tuple[HistoryEntry, ...]) -> MessageView:
    return MessageView(
        sms_id=row[0], username=row[1], sender=row[2], recipient=row[3], text=row[4], coding=Coding(row[5]),
        part_count=row[6], state=State(row[7]), transport=row[8], attempts=row[9], error_code=row[10],
        error_text=row[11], callback_url=row[12], callback_state=callback_state,
        created_at=row[13], updated_at=row[14], priority=Priority.of_rank(row[18]), send_at=row[19], parts=parts,
        history=history)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
