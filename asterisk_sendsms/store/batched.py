"""The grouped fast paths: submits and receipts the writer runs for a whole batch at once, each kind of write in
one statement instead of one per message (at a few thousand messages a second, those round trips were what kept
the writer busy). They decide nothing of their own: state moves, finishing and the receipt rule are `ops`'."""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import PartOutcome, Receipt, ReceiptResult
from asterisk_sendsms.store.db import Db
from asterisk_sendsms.store.ops import (
    WAITING_PART_STATES,
    Finish,
    RecordedReceipt,
    apply_receipt,
    finish_all,
    move_all,
    receipt_effect,
    receipt_key,
    record_receipts,
)

__all__ = ["ReceiptAt", "Submitted", "apply_all_receipts", "mark_all_submitted"]


class Submitted(NamedTuple):
    sms_id: str
    transport: str
    smsc_ids: tuple[str, ...]
    now: float
    receipt_deadline: float | None


def mark_all_submitted(db: Db, submits: list[Submitted]) -> list[ReceiptResult]:
    """queued → submitted with the parts' SMSC ids; `sent` at once without a receipt deadline; receipts that
    arrived early are applied."""
    # The same keys as a receipt takes: a receipt stored early by another node is seen here, or it sees these
    # parts; never neither.
    db.lock_keys([receipt_key(s.transport, smsc_id) for s in submits for smsc_id in s.smsc_ids])
    move_all(db, State.SUBMITTED, "transport = v.column2, due_at = CAST(v.column3 AS DOUBLE PRECISION),"
             " claimed_by = NULL, attempts = attempts + 1, error_code = '', error_text = '',"
             " updated_at = CAST(v.column4 AS DOUBLE PRECISION), submitted_at = CAST(v.column4 AS DOUBLE PRECISION)",
             [(s.sms_id, s.transport, s.receipt_deadline, s.now) for s in submits])
    # A message submitted again (after a retry) has its rows already: they take the new ids.
    db.insert_many("parts", ("sms_id", "idx", "transport", "smsc_id", "state", "updated_at"), [
        (s.sms_id, index, s.transport, smsc_id, State.SUBMITTED.value, s.now)
        for s in submits for index, smsc_id in enumerate(s.smsc_ids)],
        " ON CONFLICT (sms_id, idx) DO UPDATE SET transport = excluded.transport, smsc_id = excluded.smsc_id,"
        " state = excluded.state, error_code = '', updated_at = excluded.updated_at")
    results = [ReceiptResult(s.sms_id) for s in submits]
    unreceipted = [(position, s) for position, s in enumerate(submits) if s.receipt_deadline is None]
    # No receipt will come: nothing more will be known than this, and the sender hears it now.
    finish_all(db, [Finish(s.sms_id, State.SENT, "", "", s.now) for _, s in unreceipted])
    for position, s in unreceipted:
        results[position] = ReceiptResult(s.sms_id, State.SENT, s.now)
    if db.execute("SELECT 1 FROM early_receipts LIMIT 1").fetchone() is None:
        return results  # nearly always: receipts come after their submit is recorded
    for position, s in enumerate(submits):
        placeholders = ",".join("?" * len(s.smsc_ids))
        early = db.execute("DELETE FROM early_receipts WHERE transport = ? AND smsc_id IN"
                           f" ({placeholders}) RETURNING smsc_id, outcome, error_code, at",
                           (s.transport, *s.smsc_ids)).fetchall()
        for smsc_id, outcome, error_code, at in sorted(early, key=lambda row: row[3]):
            applied = apply_receipt(db, Receipt(s.transport, smsc_id, PartOutcome(outcome), error_code, at), s.now)
            if applied.final_state is not None:
                results[position] = applied
    return results


class ReceiptAt(NamedTuple):
    receipt: Receipt
    now: float


def apply_all_receipts(db: Db, items: list[ReceiptAt]) -> list[ReceiptResult]:
    """`ops.apply_receipt` for each, with the receipts of one-part messages matched in one query and written by
    shared statements. Those of messages of several parts (their other parts are read under the message's
    lock), early ones, and ones whose SMSC id comes twice in this batch (order matters) go one by one."""
    if len(items) == 1:
        return [apply_receipt(db, items[0].receipt, items[0].now)]
    keys = [(item.receipt.transport, item.receipt.smsc_id) for item in items]
    db.lock_keys([receipt_key(transport, smsc_id) for transport, smsc_id in keys])
    # The part each receipt is for, preferred as `apply_receipt` prefers it: still waiting, then the newest.
    parts: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in db.select_with_values(
            "SELECT p.transport, p.smsc_id, p.sms_id, p.idx, p.state, m.state, m.part_count, m.submitted_at,"
            " p.updated_at FROM (VALUES {values}) AS v"
            " JOIN parts p ON p.transport = v.column1 AND p.smsc_id = v.column2"
            " JOIN messages m ON m.sms_id = p.sms_id", sorted(set(keys))):
        key = (row[0], row[1])
        held = parts.get(key)
        if held is None or (row[4] in WAITING_PART_STATES, row[8]) > (held[4] in WAITING_PART_STATES, held[8]):
            parts[key] = row
    repeated = {key for key, count in Counter(keys).items() if count > 1}
    together: list[tuple[int, RecordedReceipt]] = []
    for position, (item, key) in enumerate(zip(items, keys, strict=True)):
        row = parts.get(key)
        if row is not None and key not in repeated and row[6] == 1:
            _, _, sms_id, index, part_state, message_state, part_count, submitted_at, _ = row
            effect = receipt_effect(index, part_state, message_state, part_count, item.receipt)
            together.append((position, RecordedReceipt(sms_id, index, submitted_at, item.receipt, item.now, effect)))
    results: list[ReceiptResult | None] = [None] * len(items)
    # The states were read in this transaction under the keys' locks: a message that does not move as read is a
    # bug or another node's doing, and each receipt is then applied alone (`GroupFailed`).
    for (position, _), result in zip(together, record_receipts(db, [r for _, r in together]), strict=True):
        results[position] = result
    return [result if result is not None else apply_receipt(db, item.receipt, item.now)
            for item, result in zip(items, results, strict=True)]
