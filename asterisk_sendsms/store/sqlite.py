"""SQLite implementation of the `Store`: one file in WAL mode, owned by one daemon, written by one thread
that commits concurrent operations together (group commit) so durable accept stays fast."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..config import StoreConfig
from ..encoding import Coding
from ..errors import ServiceUnavailable, SmsGatewayError
from ..lifecycle import SOURCES, State, check_transition
from ..model import (
    CallbackJob,
    HistoryEntry,
    IncomingPart,
    IncomingView,
    MessageView,
    NewMessage,
    OutboundMessage,
    PartOutcome,
    PartView,
    Receipt,
    ReceiptResult,
)

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    sms_id       TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    sender       TEXT,
    recipient    TEXT NOT NULL,
    text         TEXT NOT NULL,
    coding       TEXT NOT NULL,
    part_count   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    transport    TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error_code   TEXT NOT NULL DEFAULT '',
    error_text   TEXT NOT NULL DEFAULT '',
    callback_url TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    due_at       REAL,            -- accepted/queued: when to dispatch; submitted: receipt deadline
    claimed      INTEGER NOT NULL DEFAULT 0,
    -- When each step of the happy path was first reached; the history table keeps only the other events
    -- (retries, intermediate receipts), which spares four writes per message.
    queued_at    REAL,
    submitted_at REAL,
    done_at      REAL
);
CREATE INDEX IF NOT EXISTS messages_dispatch ON messages (due_at) WHERE state IN ('accepted', 'queued');
CREATE INDEX IF NOT EXISTS messages_receipt_deadline ON messages (due_at) WHERE state = 'submitted';
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (created_at);
CREATE TABLE IF NOT EXISTS parts (
    sms_id     TEXT NOT NULL REFERENCES messages (sms_id),
    idx        INTEGER NOT NULL,
    transport  TEXT NOT NULL,
    smsc_id    TEXT NOT NULL,
    state      TEXT NOT NULL,
    error_code TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (sms_id, idx)
);
CREATE INDEX IF NOT EXISTS parts_by_smsc_id ON parts (transport, smsc_id);
CREATE TABLE IF NOT EXISTS history (
    sms_id TEXT NOT NULL,
    at     REAL NOT NULL,
    state  TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_by_message ON history (sms_id);
CREATE TABLE IF NOT EXISTS early_receipts (
    transport  TEXT NOT NULL,
    smsc_id    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    error_code TEXT NOT NULL,
    at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS early_receipts_key ON early_receipts (transport, smsc_id);
CREATE TABLE IF NOT EXISTS callbacks (
    job_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sms_id     TEXT NOT NULL,
    url        TEXT NOT NULL,
    state      TEXT NOT NULL,     -- pending, done, abandoned
    attempts   INTEGER NOT NULL DEFAULT 0,
    due_at     REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    claimed    INTEGER NOT NULL DEFAULT 0,
    kind       TEXT NOT NULL DEFAULT 'delivery'   -- delivery (SMSDeliveryReport), incoming (IncomingSMS)
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS callbacks_by_message ON callbacks (sms_id);
CREATE TABLE IF NOT EXISTS incoming (
    incoming_id TEXT PRIMARY KEY,
    transport   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    text        TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incoming_parts (
    transport   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    reference   INTEGER NOT NULL,
    total       INTEGER NOT NULL,
    sequence    INTEGER NOT NULL,
    recipient   TEXT NOT NULL,
    text        TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (transport, sender, reference, total, sequence)
);
"""

_VIEW_COLUMNS = ("sms_id, username, sender, recipient, text, coding, part_count, state, transport, attempts,"
                 " error_code, error_text, callback_url, created_at, updated_at, queued_at, submitted_at, done_at")
_FINAL_PART_STATES = frozenset(o.value for o in PartOutcome if o.final)
# Receipts for ids nobody submitted are dropped after this long.
EARLY_RECEIPT_TTL = 24 * 3600.0
_BATCH_LIMIT = 1024


class SqliteStore:
    def __init__(self, config: StoreConfig) -> None:
        self._path = config.path
        self._synchronous = config.synchronous.upper()
        self._ops: queue.SimpleQueue[tuple[Operation, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------ the writer thread

    async def open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(str(self._path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceUnavailable(f"another asterisk-sendsms daemon is using {self._path}") from None
        except OSError as exc:
            raise ServiceUnavailable(f"cannot open the message store {self._path}: {exc.strerror}") from None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="sqlite-store", daemon=True)
        self._thread.start()
        await ready

    async def close(self) -> None:
        if self._thread is not None:
            self._ops.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise ServiceUnavailable(f"{self._path} has schema version {row[0]}, newer than this program's "
                                     f"{SCHEMA_VERSION}")
        return conn

    def _serve(self, ready: asyncio.Future[None]) -> None:
        loop = ready.get_loop()
        try:
            conn = self._connect()
        except (sqlite3.Error, SmsGatewayError) as exc:
            error = exc if isinstance(exc, SmsGatewayError) else ServiceUnavailable(
                f"cannot open the message store {self._path}: {exc}")
            loop.call_soon_threadsafe(_settle, ready, None, error)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            while (item := self._ops.get()) is not None:
                batch = [item]
                while len(batch) < _BATCH_LIMIT:
                    try:
                        more = self._ops.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._ops.put(None)
                        break
                    batch.append(more)
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection,
                   batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        """Run the batch in one transaction. If any operation fails, roll back and run each alone, so one
        caller's error never costs the others their writes."""
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [operation(conn) for operation, _ in batch]
            conn.execute("COMMIT")
            outcomes = [(future, result, None) for (_, future), result in zip(batch, results, strict=True)]
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                outcomes = [(batch[0][1], None, _translate(exc))]
            else:
                outcomes = [self._run_alone(conn, operation, future) for operation, future in batch]
        loop = outcomes[0][0].get_loop()
        loop.call_soon_threadsafe(_settle_all, outcomes)

    @staticmethod
    def _run_alone(conn: sqlite3.Connection, operation: Operation, future: asyncio.Future[Any]
                   ) -> tuple[asyncio.Future[Any], Any, BaseException | None]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = operation(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return future, None, _translate(exc)
        return future, result, None

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise ServiceUnavailable("the message store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.put((operation, future))
        return await future

    # ------------------------------------------------------------ operations

    async def accept(self, message: NewMessage) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO messages (sms_id, username, sender, recipient, text, coding, part_count, state,"
                " callback_url, created_at, updated_at, expires_at, due_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (message.sms_id, message.username, message.sender, message.recipient, message.text,
                 message.coding.value, message.part_count, State.ACCEPTED.value, message.callback_url,
                 message.created_at, message.created_at, message.expires_at, message.created_at))
        await self._run(op)

    async def release_claims(self, now: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE callbacks SET due_at = ?, claimed = 0 WHERE state = 'pending' AND claimed = 1", (now,))
            return conn.execute("UPDATE messages SET due_at = ?, claimed = 0 WHERE state = 'queued' AND claimed = 1",
                                (now,)).rowcount
        return await self._run(op)

    async def claim(self, limit: int, now: float, lease: float) -> list[OutboundMessage]:
        def op(conn: sqlite3.Connection) -> list[OutboundMessage]:
            rows = conn.execute(
                "SELECT sms_id, sender, recipient, text, attempts, expires_at FROM messages"
                " WHERE state IN ('accepted', 'queued') AND due_at <= ? ORDER BY due_at LIMIT ?",
                (now, limit)).fetchall()
            claimed: list[OutboundMessage] = []
            for sms_id, sender, recipient, text, attempts, expires_at in rows:
                if expires_at <= now:
                    _finish(conn, sms_id, State.EXPIRED, "EXPIRED",
                            "validity period ended before the message could be submitted", now, None)
                    continue
                _move(conn, sms_id, State.QUEUED, "due_at = ?, claimed = 1, updated_at = ?,"
                      " queued_at = COALESCE(queued_at, ?)", (now + lease, now, now))
                claimed.append(OutboundMessage(sms_id, sender, recipient, text, attempts, expires_at))
            return claimed
        return await self._run(op)

    async def mark_submitted(self, sms_id: str, transport: str, smsc_ids: Sequence[str], now: float,
                             receipt_deadline: float | None) -> ReceiptResult:
        def op(conn: sqlite3.Connection) -> ReceiptResult:
            _move(conn, sms_id, State.SUBMITTED, "transport = ?, due_at = ?, claimed = 0, attempts = attempts + 1,"
                  " error_code = '', error_text = '', updated_at = ?, submitted_at = ?",
                  (transport, receipt_deadline, now, now))
            conn.executemany(
                "INSERT OR REPLACE INTO parts (sms_id, idx, transport, smsc_id, state, updated_at)"
                " VALUES (?, ?, ?, ?, 'submitted', ?)",
                [(sms_id, index, transport, smsc_id, now) for index, smsc_id in enumerate(smsc_ids)])
            result = ReceiptResult(sms_id)
            placeholders = ",".join("?" * len(smsc_ids))
            statement = ("DELETE FROM early_receipts WHERE transport = ? AND smsc_id IN"  # noqa: S608
                         f" ({placeholders}) RETURNING smsc_id, outcome, error_code, at")
            early = conn.execute(statement, (transport, *smsc_ids)).fetchall()
            for smsc_id, outcome, error_code, at in sorted(early, key=lambda row: row[3]):
                applied = _apply_receipt(conn, Receipt(transport, smsc_id, PartOutcome(outcome), error_code, at), now)
                if applied.final_state is not None:
                    result = applied
            return result
        return await self._run(op)

    async def retry_later(self, sms_id: str, due_at: float, error_code: str, error_text: str, now: float,
                          attempted: bool) -> None:
        def op(conn: sqlite3.Connection) -> None:
            _move(conn, sms_id, State.QUEUED, "due_at = ?, claimed = 0, error_code = ?, error_text = ?,"
                  " attempts = attempts + ?, updated_at = ?", (due_at, error_code, error_text, int(attempted), now))
            _history(conn, sms_id, now, State.QUEUED, f"retry in {due_at - now:.0f}s: {error_code} {error_text}")
        await self._run(op)

    async def finish(self, sms_id: str, state: State, error_code: str, error_text: str, now: float,
                     transport: str | None = None, attempted: bool = False) -> None:
        def op(conn: sqlite3.Connection) -> None:
            _finish(conn, sms_id, state, error_code, error_text, now, transport, int(attempted))
        await self._run(op)

    async def apply_receipt(self, receipt: Receipt, now: float) -> ReceiptResult:
        return await self._run(lambda conn: _apply_receipt(conn, receipt, now))

    async def expire_overdue(self, now: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT sms_id FROM messages WHERE state = 'submitted' AND due_at <= ?",
                                (now,)).fetchall()
            for (sms_id,) in rows:
                _finish(conn, sms_id, State.EXPIRED, "NO_RECEIPT", "no final delivery receipt arrived in time", now,
                        None)
            conn.execute("DELETE FROM early_receipts WHERE at < ?", (now - EARLY_RECEIPT_TTL,))
            return len(rows)
        return await self._run(op)

    async def awaiting_receipts(self, transport: str) -> list[tuple[str, str]]:
        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT p.smsc_id, m.recipient FROM parts p JOIN messages m ON m.sms_id = p.sms_id"
                " WHERE p.transport = ? AND p.state IN ('submitted', 'enroute', 'accepted')"
                " AND m.state = 'submitted'", (transport,)).fetchall()
            return [(smsc_id, recipient) for smsc_id, recipient in rows]
        return await self._run(op)

    async def get(self, sms_id: str, detail: bool = True) -> MessageView | None:
        return await self._run(lambda conn: _view(conn, sms_id, detail))

    async def list_messages(self, username: str | None, state: State | None, recipient: str | None,
                            since: float | None, limit: int) -> list[MessageView]:
        def op(conn: sqlite3.Connection) -> list[MessageView]:
            where: list[str] = ["created_at >= ?"]
            params: list[float | str] = [since or 0.0]
            for column, value in (("username", username), ("state", state.value if state else None)):
                if value is not None:
                    where.append(f"{column} = ?")
                    params.append(value)
            if recipient:
                where.append("recipient LIKE ? ESCAPE '\\'")
                params.append(recipient.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
            rows = conn.execute(f"SELECT {_VIEW_COLUMNS} FROM messages WHERE {' AND '.join(where)}"  # noqa: S608
                                " ORDER BY created_at DESC LIMIT ?", (*params, limit)).fetchall()
            return [_message_view(row, None, (), ()) for row in rows]
        return await self._run(op)

    async def stats(self, since: float) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM messages WHERE created_at >= ? GROUP BY state",
                                       (since,)).fetchall())
            per_minute = dict(conn.execute(
                "SELECT CAST(created_at / 60 AS INTEGER), COUNT(*) FROM messages WHERE created_at >= ?"
                " GROUP BY 1", (since,)).fetchall())
            queue = conn.execute("SELECT COUNT(*) FROM messages WHERE state IN ('accepted', 'queued')").fetchone()[0]
            callbacks = conn.execute("SELECT COUNT(*) FROM callbacks WHERE state = 'pending'").fetchone()[0]
            return {"states": states, "per_minute": per_minute, "queue": queue, "pending_callbacks": callbacks}
        return await self._run(op)

    async def store_incoming(self, part: IncomingPart, callback_url: str | None) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            text, received_at = part.text, part.received_at
            if part.total > 1:
                key = (part.transport, part.sender, part.reference, part.total)
                conn.execute("INSERT OR IGNORE INTO incoming_parts VALUES (?,?,?,?,?,?,?,?)",
                             (*key, part.sequence, part.recipient, part.text, part.received_at))
                where = "transport = ? AND sender = ? AND reference = ? AND total = ?"
                parts = conn.execute(f"SELECT text, received_at FROM incoming_parts WHERE {where}"  # noqa: S608
                                     " ORDER BY sequence", key).fetchall()
                if len(parts) < part.total:
                    return None
                conn.execute(f"DELETE FROM incoming_parts WHERE {where}", key)  # noqa: S608
                text, received_at = "".join(t for t, _ in parts), parts[0][1]
            incoming_id = str(uuid.uuid4())
            conn.execute("INSERT INTO incoming VALUES (?,?,?,?,?,?)",
                         (incoming_id, part.transport, part.sender, part.recipient, text, received_at))
            if callback_url:
                conn.execute("INSERT INTO callbacks (sms_id, url, state, due_at, created_at, updated_at, kind)"
                             " VALUES (?, ?, 'pending', ?, ?, ?, 'incoming')",
                             (incoming_id, callback_url, part.received_at, part.received_at, part.received_at))
            return incoming_id
        return await self._run(op)

    async def claim_callbacks(self, limit: int, now: float, lease: float) -> list[CallbackJob]:
        def op(conn: sqlite3.Connection) -> list[CallbackJob]:
            rows = conn.execute("SELECT job_id, sms_id, url, attempts, created_at, kind FROM callbacks"
                                " WHERE state = 'pending' AND due_at <= ? ORDER BY due_at LIMIT ?",
                                (now, limit)).fetchall()
            conn.executemany("UPDATE callbacks SET due_at = ?, attempts = attempts + 1, claimed = 1, updated_at = ?"
                             " WHERE job_id = ?", [(now + lease, now, row[0]) for row in rows])
            # The subject is read in the same operation: one store round trip per batch, not per job.
            return [CallbackJob(job_id, sms_id, url, attempts + 1, created_at, kind,
                                _incoming(conn, sms_id) if kind == "incoming" else _view(conn, sms_id, False))
                    for job_id, sms_id, url, attempts, created_at, kind in rows]
        return await self._run(op)

    async def callbacks_done(self, job_ids: Sequence[int], now: float) -> None:
        await self._run(lambda conn: conn.executemany(
            "UPDATE callbacks SET state = 'done', last_error = '', updated_at = ? WHERE job_id = ?",
            [(now, job_id) for job_id in job_ids]))

    async def callback_retry(self, job_id: int, due_at: float, error: str, now: float) -> None:
        await self._run(lambda conn: conn.execute(
            "UPDATE callbacks SET due_at = ?, last_error = ?, claimed = 0, updated_at = ? WHERE job_id = ?",
            (due_at, error, now, job_id)))

    async def callback_abandon(self, job_id: int, error: str, now: float) -> None:
        await self._run(lambda conn: conn.execute(
            "UPDATE callbacks SET state = 'abandoned', last_error = ?, updated_at = ? WHERE job_id = ?",
            (error, now, job_id)))


# ---------------------------------------------------------------- helpers run on the writer thread


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write stands regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        log.error("message store error: %s", exc)
        return ServiceUnavailable(f"message store error: {exc}")
    return exc


def _move(conn: sqlite3.Connection, sms_id: str, target: State, assignments: str, params: Sequence[Any]) -> None:
    """Change state with one conditional UPDATE whose allowed sources come from the lifecycle table."""
    sources = SOURCES[target]
    placeholders = ",".join("?" * len(sources))
    # Only placeholders and this module's own column lists are formatted into the statement.
    statement = f"UPDATE messages SET state = ?, {assignments} WHERE sms_id = ? AND state IN ({placeholders})"  # noqa: S608
    cursor = conn.execute(statement, (target.value, *params, sms_id, *(s.value for s in sources)))
    if cursor.rowcount == 0:
        check_transition(sms_id, _state(conn, sms_id), target)  # raises: illegal from the current state
        raise ServiceUnavailable(f"message {sms_id}: state changed during the update")


def _history(conn: sqlite3.Connection, sms_id: str, at: float, state: State, detail: str) -> None:
    conn.execute("INSERT INTO history (sms_id, at, state, detail) VALUES (?, ?, ?, ?)",
                 (sms_id, at, state.value, detail))


def _state(conn: sqlite3.Connection, sms_id: str) -> State:
    row = conn.execute("SELECT state FROM messages WHERE sms_id = ?", (sms_id,)).fetchone()
    if row is None:
        raise ServiceUnavailable(f"message {sms_id} is not in the store")
    return State(row[0])


def _finish(conn: sqlite3.Connection, sms_id: str, target: State, error_code: str, error_text: str, now: float,
            transport: str | None, attempts: int = 0) -> None:
    _move(conn, sms_id, target, "error_code = ?, error_text = ?, transport = COALESCE(?, transport), due_at = NULL,"
          " claimed = 0, attempts = attempts + ?, updated_at = ?, done_at = ?",
          (error_code, error_text, transport, attempts, now, now))
    # The callback outbox row commits with the final state, so a crash cannot lose the notification.
    conn.execute("INSERT INTO callbacks (sms_id, url, state, due_at, created_at, updated_at)"
                 " SELECT sms_id, callback_url, 'pending', ?, ?, ? FROM messages"
                 " WHERE sms_id = ? AND callback_url IS NOT NULL", (now, now, now, sms_id))


def _apply_receipt(conn: sqlite3.Connection, receipt: Receipt, now: float) -> ReceiptResult:
    # SMSC ids may be reused over time (some simulators restart at 0): prefer the part still waiting.
    row = conn.execute(
        "SELECT p.sms_id, p.idx, p.state, m.state, m.part_count, m.submitted_at FROM parts p"
        " JOIN messages m ON m.sms_id = p.sms_id"
        " WHERE p.transport = ? AND p.smsc_id = ?"
        " ORDER BY p.state IN ('submitted', 'enroute', 'accepted') DESC, p.updated_at DESC LIMIT 1",
        (receipt.transport, receipt.smsc_id)).fetchone()
    if row is None:
        conn.execute("INSERT INTO early_receipts (transport, smsc_id, outcome, error_code, at) VALUES (?,?,?,?,?)",
                     (receipt.transport, receipt.smsc_id, receipt.outcome.value, receipt.error_code, receipt.at or now))
        return ReceiptResult(None)
    sms_id, index, part_state, message_state, part_count, submitted_at = row
    if part_state in _FINAL_PART_STATES:
        return ReceiptResult(sms_id)  # a repeated receipt changes nothing
    conn.execute("UPDATE parts SET state = ?, error_code = ?, updated_at = ? WHERE sms_id = ? AND idx = ?",
                 (receipt.outcome.value, receipt.error_code, now, sms_id, index))
    if message_state != State.SUBMITTED:
        return ReceiptResult(sms_id)  # already final (an earlier part failed); the part row keeps the news
    detail = f"part {index + 1}: {receipt.outcome.value}" + (f" err {receipt.error_code}" if receipt.error_code else "")
    if not receipt.outcome.final:
        _history(conn, sms_id, now, State.SUBMITTED, detail)
        return ReceiptResult(sms_id)
    if receipt.outcome is PartOutcome.DELIVERED:
        if part_count > 1 and conn.execute("SELECT COUNT(*) FROM parts WHERE sms_id = ? AND state != 'delivered'",
                                           (sms_id,)).fetchone()[0]:
            _history(conn, sms_id, now, State.SUBMITTED, detail)
            return ReceiptResult(sms_id)
        _finish(conn, sms_id, State.DELIVERED, "", "", now, None)
        return ReceiptResult(sms_id, State.DELIVERED, submitted_at)
    target = receipt.outcome.message_state
    _finish(conn, sms_id, target, receipt.error_code, detail, now, None)
    return ReceiptResult(sms_id, target, submitted_at)


def _incoming(conn: sqlite3.Connection, incoming_id: str) -> IncomingView | None:
    row = conn.execute("SELECT incoming_id, transport, sender, recipient, text, received_at FROM incoming"
                       " WHERE incoming_id = ?", (incoming_id,)).fetchone()
    return IncomingView(*row) if row else None


def _view(conn: sqlite3.Connection, sms_id: str, detail: bool = True) -> MessageView | None:
    row = conn.execute(f"SELECT {_VIEW_COLUMNS} FROM messages WHERE sms_id = ?", (sms_id,)).fetchone()  # noqa: S608
    if row is None:
        return None
    if not detail:
        return _message_view(row, None, (), ())
    parts = tuple(PartView(idx + 1, smsc_id, state, error_code, updated_at)
                  for idx, smsc_id, state, error_code, updated_at
                  in conn.execute("SELECT idx, smsc_id, state, error_code, updated_at FROM parts WHERE sms_id = ?"
                                  " ORDER BY idx", (sms_id,)))
    queued_at, submitted_at, done_at = row[15:18]
    steps = [HistoryEntry(row[13], State.ACCEPTED, f"by {row[1]}")]
    if queued_at is not None:
        steps.append(HistoryEntry(queued_at, State.QUEUED, ""))
    if submitted_at is not None:
        ids = ", ".join(p.smsc_id or "-" for p in parts)
        steps.append(HistoryEntry(submitted_at, State.SUBMITTED, f"via {row[8]}, SMSC id {ids}"))
    events = [HistoryEntry(at, State(state), detail) for at, state, detail
              in conn.execute("SELECT at, state, detail FROM history WHERE sms_id = ? ORDER BY rowid", (sms_id,))]
    if done_at is not None:
        events.append(HistoryEntry(done_at, State(row[7]), f"{row[10]} {row[11]}".strip()))
    # Steps first on equal times: a receipt can be recorded in the same instant as its submit.
    history = tuple(sorted(steps + events, key=lambda entry: entry.at))
    callback = conn.execute("SELECT state FROM callbacks WHERE sms_id = ? ORDER BY job_id DESC LIMIT 1",
                            (sms_id,)).fetchone()
    return _message_view(row, callback[0] if callback else None, parts, history)


def _message_view(row: tuple[Any, ...], callback_state: str | None, parts: tuple[PartView, ...],
                  history: tuple[HistoryEntry, ...]) -> MessageView:
    return MessageView(
        sms_id=row[0], username=row[1], sender=row[2], recipient=row[3], text=row[4], coding=Coding(row[5]),
        part_count=row[6], state=State(row[7]), transport=row[8], attempts=row[9], error_code=row[10],
        error_text=row[11], callback_url=row[12], callback_state=callback_state,
        created_at=row[13], updated_at=row[14], parts=parts, history=history)
