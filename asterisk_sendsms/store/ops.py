"""The lifecycle operations one message at a time: the specification the grouped paths of `batched` share.
A state change is one conditional UPDATE whose allowed sources come from the lifecycle table (`move_all`); a
final state queues the message's notification in the same transaction (`finish_all`); what a receipt does is
decided by one pure rule (`receipt_effect`) and written by one function (`record_receipts`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn

from asterisk_sendsms.core.errors import MessageNotFound, NotCancellable, ServiceUnavailable
from asterisk_sendsms.core.lifecycle import SOURCES, State, check_transition
from asterisk_sendsms.core.model import CallbackState, MessageView, PartOutcome, Receipt, ReceiptResult
from asterisk_sendsms.store.db import Db, GroupFailed
from asterisk_sendsms.store.schema import in_states
from asterisk_sendsms.store.views import view

__all__ = ["FINAL_PART_STATES", "WAITING_PART_STATES", "Finish", "ReceiptEffect", "RecordedReceipt",
           "apply_receipt", "cancel", "expire_overdue", "finish", "finish_all", "history", "move_all",
           "receipt_effect", "receipt_key", "record_receipts", "retry_later"]

FINAL_PART_STATES = frozenset(o.value for o in PartOutcome if o.final)
# A part submitted, or with only intermediate receipts so far.
WAITING_PART_STATES = frozenset({State.SUBMITTED.value} | {o.value for o in PartOutcome if not o.final})
# Receipts for ids nobody submitted are dropped after this long.
EARLY_RECEIPT_TTL = 24 * 3600.0


def move_all(db: Db, target: State, assignments: str, rows: Sequence[Sequence[Any]]) -> None:
    """Move the rows' messages to `target` in one conditional UPDATE whose allowed sources come from the
    lifecycle table. Each row is (sms_id, ...) and `assignments` reads the rest as v.column2, v.column3, ...
    (both engines name a VALUES list's columns so). One message that cannot move says why (`IllegalTransition`);
    several hand their batch back to the writer (`GroupFailed`), which runs each alone to find which."""
    moved = db.with_values(
        f"UPDATE messages SET state = '{target.value}', {assignments} FROM (VALUES {{values}}) AS v"
        f" WHERE messages.sms_id = v.column1 AND {in_states('messages.state', SOURCES[target])}", rows)
    if moved != len(rows):
        if len(rows) == 1:
            _refuse_move(db, rows[0][0], target)
        raise GroupFailed()


def _refuse_move(db: Db, sms_id: str, target: State) -> NoReturn:
    """Why a conditional UPDATE to `target` changed nothing."""
    check_transition(sms_id, _state(db, sms_id), target)  # raises: illegal from the current state
    raise ServiceUnavailable(f"message {sms_id}: state changed during the update")


def _state(db: Db, sms_id: str) -> State:
    row = db.execute("SELECT state FROM messages WHERE sms_id = ?", (sms_id,)).fetchone()
    if row is None:
        raise ServiceUnavailable(f"message {sms_id} is not in the store")
    return State(row[0])


def history(db: Db, entries: Sequence[tuple[str, float, State, str]]) -> None:
    """Events off the happy path (retries, intermediate receipts): (sms_id, at, state, detail) each."""
    db.insert_many("history", ("sms_id", "at", "state", "detail"), entries)


class Finish(NamedTuple):
    """A message moved to a final state, with its reason; `attempts` more submissions are counted."""
    sms_id: str
    state: State
    error_code: str
    error_text: str
    now: float
    transport: str | None = None
    attempts: int = 0


_FINISH = ("error_code = v.column2, error_text = v.column3, transport = COALESCE(v.column4, transport),"
           " due_at = NULL, claimed_by = NULL, attempts = attempts + CAST(v.column5 AS INTEGER),"
           " updated_at = CAST(v.column6 AS DOUBLE PRECISION), done_at = CAST(v.column6 AS DOUBLE PRECISION)")


def finish_all(db: Db, finishes: Sequence[Finish]) -> None:
    """Move the messages to their final states (one statement per state) and queue their notifications: they
    commit with the final states, so a crash cannot lose one."""
    by_state: dict[State, list[Finish]] = {}
    for each in finishes:
        by_state.setdefault(each.state, []).append(each)
    for target, own in by_state.items():
        move_all(db, target, _FINISH, [(f.sms_id, f.error_code, f.error_text, f.transport, f.attempts, f.now)
                                       for f in own])
    db.with_values(
        "INSERT INTO callbacks (sms_id, url, state, due_at, created_at, updated_at)"
        f" SELECT m.sms_id, m.callback_url, '{CallbackState.PENDING}', CAST(v.column2 AS DOUBLE PRECISION),"
        " CAST(v.column2 AS DOUBLE PRECISION), CAST(v.column2 AS DOUBLE PRECISION)"
        " FROM (VALUES {values}) AS v JOIN messages m ON m.sms_id = v.column1 WHERE m.callback_url IS NOT NULL",
        [(f.sms_id, f.now) for f in finishes])


def finish(db: Db, sms_id: str, target: State, error_code: str, error_text: str, now: float,
           transport: str | None = None, attempts: int = 0) -> None:
    finish_all(db, [Finish(sms_id, target, error_code, error_text, now, transport, attempts)])


def retry_later(db: Db, sms_id: str, due_at: float, error_code: str, error_text: str, now: float,
                attempted: bool) -> None:
    # Waiting again for the same reason without an attempt (no transport ready, every 2 s) is one entry in the
    # history, not one per look: the message's updated_at says when it last looked.
    repeated = not attempted and db.execute("SELECT error_code FROM messages WHERE sms_id = ?",
                                            (sms_id,)).fetchone() == (error_code,)
    move_all(db, State.QUEUED, "due_at = CAST(v.column2 AS DOUBLE PRECISION), claimed_by = NULL,"
             " error_code = v.column3, error_text = v.column4, attempts = attempts + CAST(v.column5 AS INTEGER),"
             " updated_at = CAST(v.column6 AS DOUBLE PRECISION)",
             [(sms_id, due_at, error_code, error_text, int(attempted), now)])
    if not repeated:
        history(db, [(sms_id, now, State.QUEUED, f"retry in {due_at - now:.0f}s: {error_code} {error_text}")])


def cancel(db: Db, sms_id: str, username: str | None, now: float) -> MessageView:
    db.lock_message(sms_id)
    row = db.execute("SELECT state, username, claimed_by FROM messages WHERE sms_id = ?", (sms_id,)).fetchone()
    if row is None or (username is not None and row[1] != username):
        raise MessageNotFound(sms_id)
    state, _, claimed_by = row
    # Claimed, it may be with a transport, its lease run out or not (waiting for the throughput or a window slot
    # can outlast it): only the dispatcher's record of its outcome frees it.
    if claimed_by is not None:
        raise NotCancellable(f"Message {sms_id} is being submitted and can no longer be cancelled")
    if State(state) not in SOURCES[State.CANCELLED]:
        raise NotCancellable(f"Message {sms_id} is {state} and can no longer be cancelled")
    finish(db, sms_id, State.CANCELLED, "CANCELLED", "cancelled by its sender", now)
    cancelled = view(db, sms_id)
    assert cancelled is not None
    return cancelled


def expire_overdue(db: Db, now: float) -> int:
    rows = db.execute(f"SELECT sms_id FROM messages WHERE {in_states('state', [State.SUBMITTED])} AND due_at <= ?"
                      + db.claim_suffix, (now,)).fetchall()
    for (sms_id,) in rows:
        finish(db, sms_id, State.EXPIRED, "NO_RECEIPT", "no final delivery receipt arrived in time", now)
    db.execute("DELETE FROM early_receipts WHERE at < ?", (now - EARLY_RECEIPT_TTL,))
    return len(rows)


# ---------------------------------------------------------------- receipts


def receipt_key(transport: str, smsc_id: str) -> str:
    """The advisory lock of an SMSC id: a receipt and the submit it belongs to take it, on whichever node."""
    return f"{transport}\x1f{smsc_id}"


class ReceiptEffect(NamedTuple):
    """What a receipt does: its part takes the outcome (`record`), the message's history keeps an event, the
    message reaches a final state with an error code and text."""
    record: bool
    event: str = ""
    final: State | None = None
    error_code: str = ""
    error_text: str = ""


def receipt_effect(index: int, part_state: str, message_state: str, part_count: int, receipt: Receipt,
                   others: tuple[int, int | None] = (0, None)) -> ReceiptEffect:
    """The receipt rule. `others`, needed for a settled outcome of a message of several parts: how many of its
    other parts are not settled, and the index of the first of them accepted (ACCEPTD) if any."""
    if part_state in FINAL_PART_STATES:
        return ReceiptEffect(False)  # a repeated receipt changes nothing
    if message_state != State.SUBMITTED:
        return ReceiptEffect(True)  # already final (an earlier part failed); the part row keeps the news
    detail = f"part {index + 1}: {receipt.outcome.value}" + (f" err {receipt.error_code}" if receipt.error_code
                                                             else "")
    if not receipt.outcome.final:
        return ReceiptEffect(True, detail)
    target = receipt.outcome.message_state
    if receipt.outcome.settled and part_count > 1:
        # Settled when every part is; delivered only when every part was delivered.
        unsettled, first_accepted = others
        if unsettled:
            return ReceiptEffect(True, detail)
        if receipt.outcome is PartOutcome.ACCEPTED:
            first_accepted = index if first_accepted is None else min(first_accepted, index)
        target = State.DELIVERED if first_accepted is None else State.ACKNOWLEDGED
        if first_accepted is not None and receipt.outcome is PartOutcome.DELIVERED:
            # The reason names the part that was accepted, not the delivered one that came last.
            detail = f"part {first_accepted + 1}: {PartOutcome.ACCEPTED.value}"
    if target is State.DELIVERED:
        return ReceiptEffect(True, "", target)  # a delivery has no error
    return ReceiptEffect(True, "", target, receipt.error_code, detail)


class RecordedReceipt(NamedTuple):
    """A receipt matched to its part, with the effect the rule gave it."""
    sms_id: str
    part: int  # its index
    submitted_at: float | None
    receipt: Receipt
    now: float
    effect: ReceiptEffect


def record_receipts(db: Db, recorded: Sequence[RecordedReceipt]) -> list[ReceiptResult]:
    """Write the receipts' effects, each kind of write in one statement for all of them."""
    db.with_values(
        "UPDATE parts SET state = v.column3, error_code = v.column4, updated_at = CAST(v.column5 AS DOUBLE PRECISION)"
        " FROM (VALUES {values}) AS v WHERE parts.sms_id = v.column1 AND parts.idx = CAST(v.column2 AS INTEGER)",
        [(r.sms_id, r.part, r.receipt.outcome.value, r.receipt.error_code, r.now) for r in recorded
         if r.effect.record])
    history(db, [(r.sms_id, r.now, State.SUBMITTED, r.effect.event) for r in recorded if r.effect.event])
    finish_all(db, [Finish(r.sms_id, r.effect.final, r.effect.error_code, r.effect.error_text, r.now)
                    for r in recorded if r.effect.final is not None])
    return [ReceiptResult(r.sms_id, r.effect.final, r.submitted_at if r.effect.final else None) for r in recorded]


def apply_receipt(db: Db, receipt: Receipt, now: float) -> ReceiptResult:
    """Record a receipt on its part, or keep it until its submit is recorded."""
    db.lock_keys([receipt_key(receipt.transport, receipt.smsc_id)])
    # SMSC ids may be reused over time (some simulators restart at 0): prefer the part still waiting.
    row = db.execute(
        "SELECT p.sms_id, p.idx, p.state, m.state, m.part_count, m.submitted_at FROM parts p"
        " JOIN messages m ON m.sms_id = p.sms_id WHERE p.transport = ? AND p.smsc_id = ?"
        f" ORDER BY {in_states('p.state', WAITING_PART_STATES)} DESC, p.updated_at DESC LIMIT 1",
        (receipt.transport, receipt.smsc_id)).fetchone()
    if row is None:
        db.execute("INSERT INTO early_receipts (transport, smsc_id, outcome, error_code, at) VALUES (?,?,?,?,?)",
                   (receipt.transport, receipt.smsc_id, receipt.outcome.value, receipt.error_code, receipt.at or now))
        return ReceiptResult(None)
    sms_id, index, part_state, message_state, part_count, submitted_at = row
    others: tuple[int, int | None] = (0, None)
    if part_count > 1 and part_state not in FINAL_PART_STATES:
        # Receipts for the other parts may be applied by other nodes at this moment: with the row held, the
        # state and the other parts' states read here include whatever they committed.
        db.lock_message(sms_id)
        message_state = _state(db, sms_id)
        if receipt.outcome.settled:
            unsettled, first_accepted = db.execute(
                "SELECT SUM(CASE WHEN state NOT IN (?, ?) THEN 1 ELSE 0 END), MIN(CASE WHEN state = ? THEN idx END)"
                " FROM parts WHERE sms_id = ? AND idx <> ?",
                (PartOutcome.DELIVERED.value, PartOutcome.ACCEPTED.value, PartOutcome.ACCEPTED.value, sms_id,
                 index)).fetchone()
            others = (int(unsettled or 0), first_accepted)
    effect = receipt_effect(index, part_state, message_state, part_count, receipt, others)
    [result] = record_receipts(db, [RecordedReceipt(sms_id, index, submitted_at, receipt, now, effect)])
    return result
