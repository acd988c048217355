"""The `Store` in SQL, shared by SQLite and PostgreSQL: each public method is one operation, run by the writer
(`engine`) or, if it only reads, by a reader (`readers`); what the operations do lives in `admission` (accept,
claim), `ops` (the lifecycle one message at a time), `batched` (submits and receipts grouped per commit),
`outbox` (notifications, incoming SMS) and `views`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asterisk_sendsms.app.limits import NO_LIMITS, Limits
from asterisk_sendsms.core.errors import RequestError
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import (
    CallbackJob,
    CallbackShares,
    CallbackState,
    IncomingPart,
    MessageView,
    NewMessage,
    OptOut,
    OutboundMessage,
    PendingCallback,
    Receipt,
    ReceiptResult,
)
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.store import admission, batched, ops, outbox, views
from asterisk_sendsms.store.db import Cursor, Db
from asterisk_sendsms.store.engine import Engine, Grouped
from asterisk_sendsms.store.schema import in_states

__all__ = ["Cursor", "Db", "SqlStore"]

_QUEUED = in_states("state", [State.QUEUED])


class SqlStore(Engine):
    """The operations of the `Store` protocol; an engine's subclass supplies its connections."""

    async def accept(self, message: NewMessage, limits: Limits = NO_LIMITS) -> None:
        refusal = await self._run(Grouped(admission.accept_all, (message, limits)))
        if refusal is not None:
            raise refusal

    async def accept_many(self, messages: Sequence[NewMessage], limits: Limits = NO_LIMITS
                          ) -> list[RequestError | None]:
        batch = [(message, limits) for message in messages]
        refusals: list[RequestError | None] = await self._run(lambda db: admission.accept_all(db, batch))
        return refusals

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def release_claims(self, now: float) -> int:
        def op(db: Db) -> int:
            db.execute(f"UPDATE callbacks SET due_at = ?, claimed_by = NULL WHERE state = '{CallbackState.PENDING}'"
                       " AND claimed_by = ?",
                       (now, self._node))
            return db.execute(f"UPDATE messages SET due_at = ?, claimed_by = NULL WHERE {_QUEUED}"
                              " AND claimed_by = ?", (now, self._node)).rowcount
        return await self._run(op)

    async def claim(self, limit: int, now: float, lease: float, up_to: Priority = Priority.BULK,
                    limits: Limits = NO_LIMITS) -> list[OutboundMessage]:
        return await self._run(lambda db: admission.claim(db, self._node, limit, now, lease, up_to, limits))

    async def renew_claims(self, sms_ids: Sequence[str], due_at: float) -> int:
        rows = [(sms_id, due_at, self._node) for sms_id in sms_ids]
        return await self._run(lambda db: db.with_values(
            "UPDATE messages SET due_at = CAST(v.column2 AS DOUBLE PRECISION) FROM (VALUES {values}) AS v"
            f" WHERE messages.sms_id = v.column1 AND {in_states('messages.state', [State.QUEUED])}"
            " AND messages.claimed_by = v.column3", rows))

    async def mark_submitted(self, sms_id: str, transport: str, smsc_ids: Sequence[str], now: float,
                             receipt_deadline: float | None) -> ReceiptResult:
        result: ReceiptResult = await self._run(Grouped(
            batched.mark_all_submitted, batched.Submitted(sms_id, transport, tuple(smsc_ids), now, receipt_deadline),
            linger=True))
        return result

    async def retry_later(self, sms_id: str, due_at: float, error_code: str, error_text: str, now: float,
                          attempted: bool) -> None:
        await self._run(lambda db: ops.retry_later(db, sms_id, due_at, error_code, error_text, now, attempted))

    async def finish(self, sms_id: str, state: State, error_code: str, error_text: str, now: float,
                     transport: str | None = None, attempted: bool = False) -> None:
        await self._run(lambda db: ops.finish(db, sms_id, state, error_code, error_text, now, transport,
                                              int(attempted)))

    async def cancel(self, sms_id: str, username: str | None, now: float) -> MessageView:
        """Withdraw a message not yet submitted (`username`'s own, or anyone's for None); raises
        `MessageNotFound` or `NotCancellable`."""
        return await self._run(lambda db: ops.cancel(db, sms_id, username, now))

    async def apply_receipt(self, receipt: Receipt, now: float) -> ReceiptResult:
        result: ReceiptResult = await self._run(Grouped(batched.apply_all_receipts, batched.ReceiptAt(receipt, now)))
        return result

    async def expire_overdue(self, now: float) -> int:
        return await self._run(lambda db: ops.expire_overdue(db, now))

    async def awaiting_receipts(self, transport: str) -> list[tuple[str, str]]:
        def op(db: Db) -> list[tuple[str, str]]:
            rows = db.execute(
                "SELECT p.smsc_id, m.recipient FROM parts p JOIN messages m ON m.sms_id = p.sms_id"
                f" WHERE p.transport = ? AND {in_states('p.state', ops.WAITING_PART_STATES)}"
                f" AND {in_states('m.state', [State.SUBMITTED])}", (transport,)).fetchall()
            return [(smsc_id, recipient) for smsc_id, recipient in rows]
        return await self._read(op)

    async def get(self, sms_id: str, detail: bool = True) -> MessageView | None:
        return await self._read(lambda db: views.view(db, sms_id, detail))

    async def list_messages(self, username: str | None, state: State | None, recipient: str | None,
                            since: float | None, limit: int, offset: int = 0, priority: Priority | None = None
                            ) -> list[MessageView]:
        return await self._read(lambda db: views.list_messages(db, username, state, recipient, since, limit, offset,
                                                              priority))

    async def stats(self, since: float) -> dict[str, Any]:
        return await self._read(lambda db: views.stats(db, since))

    async def quota_use(self, counters: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Parts counted so far on each (user, quota counter key)."""
        return await self._read(lambda db: {(username, key): admission.quota_used(db, username, key)
                                           for username, key in counters})

    async def store_incoming(self, part: IncomingPart, callback_url: str | None) -> str | None:
        return await self._run(lambda db: outbox.store_incoming(db, part, callback_url))

    async def add_optout(self, optout: OptOut) -> bool:
        return await self._run(lambda db: db.execute(
            "INSERT INTO optouts (number, scope, created_at, source) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (optout.number, optout.scope, optout.created_at, optout.source)).rowcount > 0)

    async def remove_optout(self, number: str, scope: str) -> bool:
        return await self._run(lambda db: db.execute("DELETE FROM optouts WHERE number = ? AND scope = ?",
                                                      (number, scope)).rowcount > 0)

    async def list_optouts(self, number: str | None, limit: int) -> list[OptOut]:
        def op(db: Db) -> list[OptOut]:
            where, params = ("WHERE number = ?", (number,)) if number is not None else ("", ())
            return [OptOut(*row) for row in db.execute(
                f"SELECT number, scope, created_at, source FROM optouts {where} ORDER BY created_at DESC LIMIT ?",
                (*params, limit)).fetchall()]
        return await self._read(op)

    async def claim_callbacks(self, limit: int, now: float, lease: float, shares: CallbackShares | None = None
                              ) -> list[CallbackJob]:
        return await self._run(lambda db: outbox.claim_callbacks(db, self._node, limit, now, lease, shares))

    async def callbacks_done(self, job_ids: Sequence[int], now: float) -> None:
        await self._run(lambda db: db.executemany(
            f"UPDATE callbacks SET state = '{CallbackState.DONE}', last_error = '', claimed_by = NULL, updated_at = ?"
            " WHERE job_id = ?",
            [(now, job_id) for job_id in job_ids]))

    async def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        def op(db: Db) -> list[PendingCallback]:
            rows = db.execute("SELECT sms_id, url, attempts, last_error, due_at FROM callbacks"
                              f" WHERE state = '{CallbackState.PENDING}' ORDER BY due_at LIMIT ?", (limit,)).fetchall()
            return [PendingCallback(*row) for row in rows]
        return await self._read(op)

    async def callback_retry(self, job_id: int, due_at: float, error: str, now: float) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE callbacks SET due_at = ?, last_error = ?, claimed_by = NULL, updated_at = ? WHERE job_id = ?",
            (due_at, error, now, job_id)))

    async def callback_abandon(self, job_id: int, error: str, now: float) -> None:
        await self._run(lambda db: db.execute(
            f"UPDATE callbacks SET state = '{CallbackState.ABANDONED}', last_error = ?, claimed_by = NULL,"
            " updated_at = ? WHERE job_id = ?", (error, now, job_id)))
