"""The `Store` in SQL, shared by SQLite and PostgreSQL: one writer thread per daemon that commits concurrent
operations together (group commit), versioned schema migrations, and the lifecycle operations written once
against `Db`, the small surface in which the two engines differ."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn, Protocol, TypeVar, cast

from asterisk_sendsms.app.limits import NO_LIMITS, Limits, quota_refusal, turns
from asterisk_sendsms.app.urlpolicy import url_host
from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.errors import (
    MessageNotFound,
    NotCancellable,
    RecipientOptedOut,
    RequestError,
    ServiceUnavailable,
    SmsGatewayError,
)
from asterisk_sendsms.core.lifecycle import (
    FAILURE_STATES,
    SOURCES,
    UNSENT_EXPIRY,
    State,
    check_transition,
)
from asterisk_sendsms.core.model import (
    CallbackJob,
    CallbackShares,
    HistoryEntry,
    IncomingPart,
    IncomingView,
    MessageView,
    NewMessage,
    OptOut,
    OutboundMessage,
    PartOutcome,
    PartView,
    PendingCallback,
    Receipt,
    ReceiptResult,
)
from asterisk_sendsms.core.traffic import Priority

__all__ = ["Cursor", "Db", "SqlStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Operation = Callable[["Db"], Any]

_VIEW_COLUMNS = ("sms_id, username, sender, recipient, text, coding, part_count, state, transport, attempts,"
                 " error_code, error_text, callback_url, created_at, updated_at, queued_at, submitted_at, done_at,"
                 " priority, send_at")
# The states each state may be reached from, as an SQL list of literals.
_SOURCES_SQL = {target: ",".join(f"'{state.value}'" for state in sources) for target, sources in SOURCES.items()}
_FINAL_PART_STATES = frozenset(o.value for o in PartOutcome if o.final)
_WAITING_PART_SET = frozenset({"submitted"} | {o.value for o in PartOutcome if not o.final})
_WAITING_PART_STATES = "(" + ", ".join(f"'{state}'" for state in sorted(_WAITING_PART_SET)) + ")"
# Final states that are not a delivery: the status page ranks their reasons.
_UNSUCCESSFUL_STATES = "(" + ", ".join(f"'{state.value}'" for state in sorted(FAILURE_STATES)) + ")"
TOP_REASONS = 5
# Receipts for ids nobody submitted are dropped after this long.
EARLY_RECEIPT_TTL = 24 * 3600.0
_BATCH_LIMIT = 1024
# Scheduled messages made due per claim, at most: 10,000 due at one second go in a few claims, none long.
RELEASE_BATCH = 2000
# How long the writer waits for more records of submits before committing them (see `_gather`). A crash
# in this time sends those messages again: as many as a window delivers in 2 ms.
OUTCOME_LINGER = 0.002
# After a failed connection attempt, operations fail at once for this long instead of each waiting for a
# connect timeout of its own.
RECONNECT_INTERVAL = 1.0
# An outage ends when operations have gone through for this long since the last failure: a full disk still
# lets reads and small writes through now and then, which must not be logged as a recovery each time.
OUTAGE_QUIET = 1.0
# Rows per statement of `Db.with_values` at most: 13 columns stay far below SQLite's 32,766 variables.
_CHUNK_ROWS = 512
# Deadlocks between nodes (PostgreSQL breaks them by aborting one side) are retried this often.
_RETRIES = 3
# Notifications whose host is filled per claim (normally all that arrived since the last claim).
_HOST_FILL = 1000
# A claim with shares looks this many times its limit ahead, for rows of hosts and users with room, and looks
# again (leaving out those that filled up) at most this many times.
_CLAIM_WINDOW = 4
_CLAIM_ROUNDS = 3


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(ABC):
    """One connection as the operations see it: statements use `?` placeholders; what differs between the
    engines is a method or attribute here."""

    # Appended to a SELECT that claims rows: other nodes skip them instead of waiting or taking them too.
    claim_suffix = ""
    # The column that orders history rows as they were written.
    history_order = "rowid"

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def broken(self) -> bool:
        """The connection is lost: it must be replaced before the next operation."""

    @abstractmethod
    def table_exists(self, name: str) -> bool: ...

    @abstractmethod
    def minute(self, column: str) -> str:
        """SQL for the whole minute number of a time in seconds."""

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str = ""
                    ) -> None:
        """INSERT the rows; `suffix` (an ON CONFLICT clause) applies to each."""
        self.with_values(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {{values}}{suffix}", rows)

    def with_values(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run `statement` with its `{values}` replaced by VALUES tuples of the rows; returns the rows changed.
        The rows go in statements of 2**k tuples: a few statements per batch instead of one per row (each is
        a release and retake of the interpreter lock for SQLite, a round trip for a server), and a handful of
        SQL texts for the statement caches."""
        return sum(cursor.rowcount for cursor in self._with_values(statement, rows))

    def select_with_values(self, statement: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """`with_values` for a query: the rows it finds."""
        return [found for cursor in self._with_values(statement, rows) for found in cursor.fetchall()]

    def _with_values(self, statement: str, rows: Sequence[Sequence[Any]]) -> Iterator[Cursor]:
        start = 0
        while start < len(rows):
            size = min(_CHUNK_ROWS, 1 << ((len(rows) - start).bit_length() - 1))
            chunk = rows[start:start + size]
            one = "(" + ",".join("?" * len(chunk[0])) + ")"
            yield self.execute(statement.format(values=",".join([one] * size)),
                               [value for row in chunk for value in row])
            start += size

    def lock_schema(self) -> None:
        """Serialise migrations of several nodes starting at once (one writer needs nothing)."""

    def lock_keys(self, keys: Sequence[str]) -> None:
        """Serialise, until commit, operations of all nodes on these keys (one writer needs nothing)."""

    def lock_message(self, sms_id: str) -> None:
        """Hold the message row until commit, so a concurrent node's change to it is seen, not missed."""


class SqlStore(ABC):
    """Every public method is one operation; a writer thread runs the operations queued meanwhile in one
    transaction. SQLite has one writer; a database server gets several, each on its own connection, so that
    the round trips of one batch do not hold up the next (they meet in row and advisory locks, as nodes do)."""

    def __init__(self, node: str, migrations: Sequence[Sequence[str]], writers: int = 1) -> None:
        self._node = node
        self._migrations = migrations
        self._writers = writers
        self._ops: queue.SimpleQueue[tuple[Operation, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._failing = ""  # the error last logged, so an outage is logged once
        self._failed_at = 0.0  # monotonic time of the last failure
        # After a failed connection attempt, writers fail operations at once until then (shared: one writer
        # that gets through lets the others try again).
        self._retry_connect_at = 0.0

    # ------------------------------------------------------------ what each engine supplies

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the messages are kept, for people: a path, or a database URL without its password."""

    @abstractmethod
    def _connect(self, owner: bool) -> Db:
        """A new connection (run on a writer thread). The owner's connection also claims the node: it refuses
        if another daemon runs as this node."""

    @abstractmethod
    def _is_database_error(self, exc: Exception) -> bool: ...

    def _is_retryable(self, exc: Exception) -> bool:
        return False

    async def _acquire(self) -> None:
        """Before the writer starts: take what makes this daemon the store's only writer of its node."""

    def _release(self) -> None: ...

    # ------------------------------------------------------------ the writer thread

    @property
    def schema_version(self) -> int:
        return len(self._migrations)

    async def open(self) -> None:
        await self._start(upgrade=False)

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema to this program's version; returns (version before, version after)."""
        found = await self._start(upgrade=True)
        await self.close()
        return found, self.schema_version

    async def _start(self, upgrade: bool) -> int:
        await self._acquire()
        try:
            found = await self._start_writer(upgrade, owner=True)
            if not upgrade:
                for _ in range(self._writers - 1):
                    await self._start_writer(False, owner=False)
        except BaseException:
            await self.close()
            raise
        return found

    async def _start_writer(self, upgrade: bool, owner: bool) -> int:
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        thread = threading.Thread(target=self._serve, args=(ready, upgrade, owner), daemon=True,
                                  name=f"store-writer-{len(self._threads)}")
        self._threads.append(thread)
        thread.start()
        return await ready

    async def close(self) -> None:
        for _ in self._threads:
            self._ops.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        self._threads = []
        while True:  # stop marks left by a writer that had failed to start
            try:
                self._ops.get_nowait()
            except queue.Empty:
                break
        self._release()

    def _open_db(self, upgrade: bool, owner: bool) -> tuple[Db, int]:
        db = self._connect(owner)
        try:
            return db, self._prepare_schema(db, upgrade)
        except BaseException:
            db.close()
            raise

    def _prepare_schema(self, db: Db, upgrade: bool) -> int:
        """Create the schema in an empty database; refuse an older one unless upgrading, and a newer one."""
        db.begin()
        try:
            db.lock_schema()
            found = 0
            if db.table_exists("schema_version"):
                row = db.execute("SELECT version FROM schema_version").fetchone()
                found = int(row[0]) if row else 0
            target = self.schema_version
            if found > target:
                raise ServiceUnavailable(f"{self.where} has schema version {found}, newer than this program's "
                                         f"{target}: upgrade asterisk-sendsms")
            if 0 < found < target and not upgrade:
                raise ServiceUnavailable(f"{self.where} has schema version {found}, older than this program's "
                                         f"{target}: run `asterisk-sendsms migrate` (with the same --config)")
            for version in range(found, target):
                for statement in self._migrations[version]:
                    db.execute(statement)
                log.info("%s: schema migrated to version %d", self.where, version + 1)
            if found != target:
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            db.commit()
            return found
        except BaseException:
            if not db.broken:
                db.rollback()
            raise

    def _serve(self, ready: asyncio.Future[int], upgrade: bool, owner: bool) -> None:
        loop = ready.get_loop()
        db: Db | None
        try:
            db, found = self._open_db(upgrade, owner)
        except Exception as exc:
            loop.call_soon_threadsafe(_settle, ready, None, self._translate(exc, "cannot open the message store"))
            return
        loop.call_soon_threadsafe(_settle, ready, found, None)
        try:
            while (item := self._ops.get()) is not None:
                batch = self._gather(item)
                db, error = self._begin(db, owner)
                if error is not None or db is None:
                    failed = error or ServiceUnavailable("the message store is unreachable")
                    outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                        (future, None, failed) for _, future in batch]
                    loop.call_soon_threadsafe(_settle_all, outcomes)
                    continue
                self._run_batch(db, batch)
                if db.broken:
                    db.close()
                    db = None
        finally:
            if db is not None:
                db.close()

    def _gather(self, first: tuple[Operation, asyncio.Future[Any]]) -> list[tuple[Operation, asyncio.Future[Any]]]:
        """The operations to commit together: those queued now, and while every one of them is a record of
        what the SMSC answered, those that come within OUTCOME_LINGER too. Nobody waits for those records
        (the next submit leaves meanwhile), and with a small window they come one by one: a commit each
        cost more than the rest of the message."""
        batch = [first]
        lingering = getattr(first[0], "linger", False)
        linger_until = 0.0
        while len(batch) < _BATCH_LIMIT:
            try:
                more = self._ops.get_nowait()
            except queue.Empty:
                if not lingering:
                    break
                linger_until = linger_until or time.monotonic() + OUTCOME_LINGER
                try:
                    more = self._ops.get(timeout=max(0.0, linger_until - time.monotonic()))
                except queue.Empty:
                    break
            if more is None:
                self._ops.put(None)
                break
            batch.append(more)
            lingering = lingering and getattr(more[0], "linger", False)
        return batch

    def _begin(self, db: Db | None, owner: bool) -> tuple[Db | None, Exception | None]:
        """A connection with a transaction begun (opened if needed), or the error. A connection found dead at
        BEGIN (the server restarted while it was idle) is replaced once, at no risk: nothing was sent on it."""
        for attempt in range(2):
            if db is None:
                if time.monotonic() < self._retry_connect_at:
                    return None, self._still_failing("the message store is unreachable")
                try:
                    db, _ = self._open_db(False, owner)
                except Exception as exc:
                    self._retry_connect_at = time.monotonic() + RECONNECT_INTERVAL
                    return None, self._translate(exc, "message store unreachable")
                self._retry_connect_at = 0.0
            try:
                db.begin()
                return db, None
            except Exception as exc:
                if not db.broken:
                    return db, self._translate(exc, "message store error")
                db.close()
                db = None
                if attempt == 1:
                    return None, self._translate(exc, "message store error")
        raise AssertionError("unreachable")

    def _run_batch(self, db: Db, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        """Run the batch in the transaction just begun. If any operation fails, roll back and run each alone,
        so one caller's error never costs the others their writes."""
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
        try:
            results = _run_in_groups(db, [operation for operation, _ in batch])
            db.commit()
            outcomes = [(future, result, None) for (_, future), result in zip(batch, results, strict=True)]
        except Exception as exc:
            if db.broken:
                error = self._translate(exc, "message store error")
                outcomes = [(future, None, error) for _, future in batch]
            else:
                db.rollback()
                if len(batch) == 1 and not self._is_retryable(exc):
                    outcomes = [(batch[0][1], None, self._translate(exc, "message store error"))]
                else:
                    outcomes = [self._run_alone(db, operation, future) for operation, future in batch]
        if (self._failing and all(error is None for _, _, error in outcomes)
                and time.monotonic() - self._failed_at >= OUTAGE_QUIET):
            log.warning("message store works again (%s)", self.where)
            self._failing = ""
        loop = outcomes[0][0].get_loop()
        loop.call_soon_threadsafe(_settle_all, outcomes)

    def _run_alone(self, db: Db, operation: Operation, future: asyncio.Future[Any]
                   ) -> tuple[asyncio.Future[Any], Any, BaseException | None]:
        for attempt in range(_RETRIES):
            if db.broken:
                return future, None, self._still_failing("the message store connection was lost")
            try:
                db.begin()
                result = operation(db)
                db.commit()
            except Exception as exc:
                if not db.broken:
                    db.rollback()
                if self._is_retryable(exc) and attempt + 1 < _RETRIES:
                    continue
                return future, None, self._translate(exc, "message store error")
            return future, result, None
        raise AssertionError("unreachable")

    def _translate(self, exc: Exception, context: str) -> Exception:
        """Engine errors become `ServiceUnavailable`, logged once per outage; the gateway's own pass through."""
        if isinstance(exc, SmsGatewayError):
            return exc
        if not self._is_database_error(exc) and not isinstance(exc, OSError):
            return exc
        self._failed_at = time.monotonic()
        reason = " ".join(str(exc).split()) or type(exc).__name__
        message = f"{context} ({self.where}): {reason}"
        if message != self._failing:
            log.error("%s", message)
            self._failing = message
        return _logged(ServiceUnavailable(message))

    def _still_failing(self, fallback: str) -> ServiceUnavailable:
        """The outage already logged goes on."""
        self._failed_at = time.monotonic()
        return _logged(ServiceUnavailable(self._failing or fallback))

    async def _run(self, operation: Callable[[Db], T]) -> T:
        if not self._threads:
            raise ServiceUnavailable("the message store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.put((operation, future))
        return await future

    # ------------------------------------------------------------ operations

    async def accept(self, message: NewMessage, limits: Limits = NO_LIMITS) -> None:
        refusal = await self._run(_Grouped(_accept_all, (message, limits)))
        if refusal is not None:
            raise refusal

    async def accept_many(self, messages: Sequence[NewMessage], limits: Limits = NO_LIMITS
                          ) -> list[RequestError | None]:
        batch = [(message, limits) for message in messages]
        refusals: list[RequestError | None] = await self._run(lambda db: _accept_all(db, batch))
        return refusals

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def release_claims(self, now: float) -> int:
        def op(db: Db) -> int:
            db.execute("UPDATE callbacks SET due_at = ?, claimed_by = NULL WHERE state = 'pending' AND claimed_by = ?",
                       (now, self._node))
            return db.execute("UPDATE messages SET due_at = ?, claimed_by = NULL WHERE state = 'queued'"
                              " AND claimed_by = ?", (now, self._node)).rowcount
        return await self._run(op)

    async def claim(self, limit: int, now: float, lease: float, up_to: Priority = Priority.BULK,
                    limits: Limits = NO_LIMITS) -> list[OutboundMessage]:
        due = f"state IN ({_SOURCES_SQL[State.QUEUED]}) AND due_at <= ?"

        def op(db: Db) -> list[OutboundMessage]:
            _release(db, now, limits)
            for (sms_id,) in db.execute(f"SELECT sms_id FROM messages WHERE {due} AND expires_at <= ? LIMIT ?"
                                        + db.claim_suffix, (now, now, limit)).fetchall():
                _finish(db, sms_id, State.EXPIRED, *UNSENT_EXPIRY, now, None)
            # One statement for the whole batch. The lease is the due time: a node that dies holding the
            # message gives it up when it passes.
            # The order of the messages_dispatch index: by class, bulk users in turn (fair_rank), oldest first.
            rows = db.execute(
                "UPDATE messages SET state = ?, due_at = ?, claimed_by = ?, updated_at = ?,"
                " queued_at = COALESCE(queued_at, ?) WHERE sms_id IN"
                f" (SELECT sms_id FROM messages WHERE {due} AND expires_at > ? AND priority <= ?"
                f" ORDER BY priority, fair_rank, due_at LIMIT ?{db.claim_suffix})"
                " RETURNING sms_id, sender, recipient, text, attempts, expires_at, priority, fair_rank, created_at,"
                " validity_period",
                (State.QUEUED.value, now + lease, self._node, now, now, now, now, up_to.rank, limit)).fetchall()
            rows.sort(key=lambda row: row[6:9])  # RETURNING keeps no order
            return [OutboundMessage(sms_id, sender, recipient, text, attempts, expires_at, Priority.of_rank(rank),
                                    fair_rank, validity is not None)
                    for sms_id, sender, recipient, text, attempts, expires_at, rank, fair_rank, _, validity in rows]
        return await self._run(op)

    async def renew_claims(self, sms_ids: Sequence[str], due_at: float) -> int:
        rows = [(sms_id, due_at, self._node) for sms_id in sms_ids]
        return await self._run(lambda db: db.with_values(
            "UPDATE messages SET due_at = CAST(v.column2 AS DOUBLE PRECISION) FROM (VALUES {values}) AS v"
            " WHERE messages.sms_id = v.column1 AND messages.state = 'queued' AND messages.claimed_by = v.column3",
            rows))

    async def mark_submitted(self, sms_id: str, transport: str, smsc_ids: Sequence[str], now: float,
                             receipt_deadline: float | None) -> ReceiptResult:
        result: ReceiptResult = await self._run(_Grouped(
            _mark_all_submitted, _Submitted(sms_id, transport, tuple(smsc_ids), now, receipt_deadline), linger=True))
        return result

    async def retry_later(self, sms_id: str, due_at: float, error_code: str, error_text: str, now: float,
                          attempted: bool) -> None:
        def op(db: Db) -> None:
            # Waiting again for the same reason without an attempt (no transport ready, every 2 s) is one
            # entry in the history, not one per look: the message's updated_at says when it last looked.
            repeated = not attempted and db.execute("SELECT error_code FROM messages WHERE sms_id = ?",
                                                    (sms_id,)).fetchone() == (error_code,)
            _move(db, sms_id, State.QUEUED, "due_at = ?, claimed_by = NULL, error_code = ?, error_text = ?,"
                  " attempts = attempts + ?, updated_at = ?", (due_at, error_code, error_text, int(attempted), now))
            if not repeated:
                _history(db, sms_id, now, State.QUEUED, f"retry in {due_at - now:.0f}s: {error_code} {error_text}")
        await self._run(op)

    async def finish(self, sms_id: str, state: State, error_code: str, error_text: str, now: float,
                     transport: str | None = None, attempted: bool = False) -> None:
        def op(db: Db) -> None:
            _finish(db, sms_id, state, error_code, error_text, now, transport, int(attempted))
        await self._run(op)

    async def cancel(self, sms_id: str, username: str | None, now: float) -> MessageView:
        """Withdraw a message not yet submitted (`username`'s own, or anyone's for None); raises
        `MessageNotFound` or `NotCancellable`."""
        def op(db: Db) -> MessageView:
            db.lock_message(sms_id)
            row = db.execute("SELECT state, username, claimed_by FROM messages WHERE sms_id = ?",
                             (sms_id,)).fetchone()
            if row is None or (username is not None and row[1] != username):
                raise MessageNotFound(sms_id)
            state, _, claimed_by = row
            # Claimed, it may be with a transport, its lease run out or not (waiting for the throughput or a window
            # slot can outlast it): only the dispatcher's record of its outcome frees it.
            if claimed_by is not None:
                raise NotCancellable(f"Message {sms_id} is being submitted and can no longer be cancelled")
            if State(state) not in SOURCES[State.CANCELLED]:
                raise NotCancellable(f"Message {sms_id} is {state} and can no longer be cancelled")
            _finish(db, sms_id, State.CANCELLED, "CANCELLED", "cancelled by its sender", now, None)
            view = _view(db, sms_id)
            assert view is not None
            return view
        return await self._run(op)

    async def apply_receipt(self, receipt: Receipt, now: float) -> ReceiptResult:
        result: ReceiptResult = await self._run(_Grouped(_apply_all_receipts, _ReceiptAt(receipt, now)))
        return result

    async def expire_overdue(self, now: float) -> int:
        def op(db: Db) -> int:
            rows = db.execute("SELECT sms_id FROM messages WHERE state = 'submitted' AND due_at <= ?"
                              + db.claim_suffix, (now,)).fetchall()
            for (sms_id,) in rows:
                _finish(db, sms_id, State.EXPIRED, "NO_RECEIPT", "no final delivery receipt arrived in time", now,
                        None)
            db.execute("DELETE FROM early_receipts WHERE at < ?", (now - EARLY_RECEIPT_TTL,))
            return len(rows)
        return await self._run(op)

    async def awaiting_receipts(self, transport: str) -> list[tuple[str, str]]:
        def op(db: Db) -> list[tuple[str, str]]:
            rows = db.execute(
                "SELECT p.smsc_id, m.recipient FROM parts p JOIN messages m ON m.sms_id = p.sms_id"
                f" WHERE p.transport = ? AND p.state IN {_WAITING_PART_STATES}"
                " AND m.state = 'submitted'", (transport,)).fetchall()
            return [(smsc_id, recipient) for smsc_id, recipient in rows]
        return await self._run(op)

    async def get(self, sms_id: str, detail: bool = True) -> MessageView | None:
        return await self._run(lambda db: _view(db, sms_id, detail))

    async def list_messages(self, username: str | None, state: State | None, recipient: str | None,
                            since: float | None, limit: int, offset: int = 0, priority: Priority | None = None
                            ) -> list[MessageView]:
        def op(db: Db) -> list[MessageView]:
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
        return await self._run(op)

    async def stats(self, since: float) -> dict[str, Any]:
        def op(db: Db) -> dict[str, Any]:
            states = dict(db.execute("SELECT state, COUNT(*) FROM messages WHERE created_at >= ? GROUP BY state",
                                     (since,)).fetchall())
            per_minute = dict(db.execute(
                f"SELECT {db.minute('created_at')}, COUNT(*) FROM messages WHERE created_at >= ?"
                " GROUP BY 1", (since,)).fetchall())
            classes = {Priority.of_rank(rank).value: (count, oldest) for rank, count, oldest in db.execute(
                "SELECT priority, COUNT(*), MIN(created_at) FROM messages"
                f" WHERE state IN ({_SOURCES_SQL[State.QUEUED]}) GROUP BY priority").fetchall()}
            queue = sum(count for count, _ in classes.values())
            scheduled, next_due = db.execute("SELECT COUNT(*), MIN(due_at) FROM messages WHERE state = 'scheduled'"
                                             ).fetchone()
            callbacks = db.execute("SELECT COUNT(*) FROM callbacks WHERE state = 'pending'").fetchone()[0]
            optouts = db.execute("SELECT COUNT(*) FROM optouts").fetchone()[0]
            reasons = db.execute(
                "SELECT error_code, COUNT(*) FROM messages WHERE updated_at >= ? AND error_code <> ''"
                f" AND state IN {_UNSUCCESSFUL_STATES} GROUP BY error_code ORDER BY 2 DESC, 1 LIMIT ?",
                (since, TOP_REASONS)).fetchall()
            return {"states": states, "per_minute": per_minute, "queue": queue, "classes": classes,
                    "scheduled": (scheduled, next_due),
                    "pending_callbacks": callbacks, "optouts": optouts,
                    "failure_reasons": [(code, count) for code, count in reasons]}
        return await self._run(op)

    async def quota_use(self, counters: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Parts counted so far on each (user, quota counter key)."""
        def op(db: Db) -> dict[tuple[str, str], int]:
            return {(username, key): _quota_used(db, username, key) for username, key in counters}
        return await self._run(op)

    async def store_incoming(self, part: IncomingPart, callback_url: str | None) -> str | None:
        def op(db: Db) -> str | None:
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
                           " VALUES (?, ?, 'pending', ?, ?, ?, 'incoming')",
                           (incoming_id, callback_url, part.received_at, part.received_at, part.received_at))
            return incoming_id
        return await self._run(op)

    async def add_optout(self, optout: OptOut) -> bool:
        def op(db: Db) -> bool:
            return db.execute("INSERT INTO optouts (number, scope, created_at, source) VALUES (?, ?, ?, ?)"
                              " ON CONFLICT DO NOTHING",
                              (optout.number, optout.scope, optout.created_at, optout.source)).rowcount > 0
        return await self._run(op)

    async def remove_optout(self, number: str, scope: str) -> bool:
        return await self._run(lambda db: db.execute("DELETE FROM optouts WHERE number = ? AND scope = ?",
                                                      (number, scope)).rowcount > 0)

    async def list_optouts(self, number: str | None, limit: int) -> list[OptOut]:
        def op(db: Db) -> list[OptOut]:
            where, params = ("WHERE number = ?", (number,)) if number is not None else ("", ())
            return [OptOut(*row) for row in db.execute(
                f"SELECT number, scope, created_at, source FROM optouts {where} ORDER BY created_at DESC LIMIT ?",
                (*params, limit)).fetchall()]
        return await self._run(op)

    async def claim_callbacks(self, limit: int, now: float, lease: float, shares: CallbackShares | None = None
                              ) -> list[CallbackJob]:
        def op(db: Db) -> list[CallbackJob]:
            # Hosts are filled here, not where the outbox rows are made (those copy URLs in SQL), and before
            # the claim, so that every due row of a full host is left out of it.
            unnamed = db.execute("SELECT job_id, url FROM callbacks WHERE state = 'pending' AND host = ''"
                                 " LIMIT ?", (_HOST_FILL,)).fetchall()
            if unnamed:
                db.executemany("UPDATE callbacks SET host = ? WHERE job_id = ?",
                               [(url_host(url), job_id) for job_id, url in unnamed])
            rows = _fair_rows(db, limit, now, shares) if shares else db.execute(
                "SELECT job_id, sms_id, url, attempts, created_at, kind FROM callbacks"
                " WHERE state = 'pending' AND due_at <= ? ORDER BY due_at LIMIT ?" + db.claim_suffix,
                (now, limit)).fetchall()
            db.executemany("UPDATE callbacks SET due_at = ?, attempts = attempts + 1, claimed_by = ?, updated_at = ?"
                           " WHERE job_id = ?", [(now + lease, self._node, now, row[0]) for row in rows])
            # The subject is read in the same operation: one store round trip per batch, not per job.
            return [CallbackJob(job_id, sms_id, url, attempts + 1, created_at, kind,
                                _incoming(db, sms_id) if kind == "incoming" else _view(db, sms_id, False))
                    for job_id, sms_id, url, attempts, created_at, kind in rows]
        return await self._run(op)

    async def callbacks_done(self, job_ids: Sequence[int], now: float) -> None:
        await self._run(lambda db: db.executemany(
            "UPDATE callbacks SET state = 'done', last_error = '', claimed_by = NULL, updated_at = ? WHERE job_id = ?",
            [(now, job_id) for job_id in job_ids]))

    async def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        def op(db: Db) -> list[PendingCallback]:
            rows = db.execute("SELECT sms_id, url, attempts, last_error, due_at FROM callbacks"
                              " WHERE state = 'pending' ORDER BY due_at LIMIT ?", (limit,)).fetchall()
            return [PendingCallback(*row) for row in rows]
        return await self._run(op)

    async def callback_retry(self, job_id: int, due_at: float, error: str, now: float) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE callbacks SET due_at = ?, last_error = ?, claimed_by = NULL, updated_at = ? WHERE job_id = ?",
            (due_at, error, now, job_id)))

    async def callback_abandon(self, job_id: int, error: str, now: float) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE callbacks SET state = 'abandoned', last_error = ?, claimed_by = NULL, updated_at = ?"
            " WHERE job_id = ?", (error, now, job_id)))


def _fair_rows(db: Db, limit: int, now: float, shares: CallbackShares) -> list[tuple[Any, ...]]:
    """Due notifications in due order, none for a host or user with its share in flight. Full hosts and users
    are left out in the statement; a window of due rows is then taken in order up to each share, and looked
    at again (without those that filled up) while it gave fewer than `limit` for that reason."""
    hosts, users = Counter(shares.hosts), Counter(shares.users)
    rows: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    for _ in range(_CLAIM_ROUNDS):
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
            f" WHERE state = 'pending' AND due_at <= ?{where} ORDER BY due_at LIMIT ?" + db.claim_suffix,
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


# ---------------------------------------------------------------- helpers run on the writer thread


def _logged(error: ServiceUnavailable) -> ServiceUnavailable:
    error.logged = True
    return error


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


class _Grouped:
    """An operation the writer runs together with the others of its kind in the same batch: `run_all` takes
    all their arguments at once, so that each of its statements runs once per batch instead of once per
    message. Every statement is a round trip through the interpreter lock (SQLite) or to the server; at a
    few thousand messages a second those round trips, not the SQL, were what kept the writer busy."""

    __slots__ = ("argument", "linger", "run_all")

    def __init__(self, run_all: Callable[[Db, list[Any]], list[Any]], argument: Any, linger: bool = False) -> None:
        self.run_all = run_all
        self.argument = argument
        self.linger = linger  # nobody waits for it: it may wait for others to commit with

    def __call__(self, db: Db) -> Any:
        return self.run_all(db, [self.argument])[0]


class _GroupFailed(Exception):
    """A grouped operation could not do all its members' work: run each alone to find whose it was."""


def _run_in_groups(db: Db, operations: Sequence[Operation]) -> list[Any]:
    """Run the operations in order, except that grouped ones of a kind all run where the first of them
    stands. They touch only their own messages, so moving them up can only let a later operation of the batch
    see their work sooner, which it handles anyway (a receipt finds its part instead of being kept for it)."""
    groups: dict[Callable[[Db, list[Any]], list[Any]], list[int]] = {}
    for index, operation in enumerate(operations):
        if isinstance(operation, _Grouped):
            groups.setdefault(operation.run_all, []).append(index)
    results: list[Any] = [None] * len(operations)
    for index, operation in enumerate(operations):
        if not isinstance(operation, _Grouped):
            results[index] = operation(db)
        elif (members := groups.pop(operation.run_all, None)) is not None:
            arguments = [cast(_Grouped, operations[member]).argument for member in members]
            for member, result in zip(members, operation.run_all(db, arguments), strict=True):
                results[member] = result
    return results


_MESSAGE_COLUMNS = ("sms_id", "username", "sender", "recipient", "text", "coding", "part_count", "state",
                    "callback_url", "created_at", "updated_at", "expires_at", "due_at", "priority", "fair_rank",
                    "validity_period", "send_at", "paced")


def _accept_all(db: Db, items: list[tuple[NewMessage, Limits]]) -> list[RequestError | None]:
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
        used = {key: _quota_used(db, username, key) for key, _, _, _ in counters}
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


def _quota_used(db: Db, username: str, key: str) -> int:
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
        (last,) = db.execute("SELECT MAX(due_at) FROM messages WHERE state = 'scheduled' AND paced = 1"
                             " AND username = ?", (username,)).fetchone()
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
    rows = db.execute("SELECT sms_id, username, priority, paced, due_at FROM messages WHERE state = 'scheduled'"
                      " AND due_at <= ? ORDER BY due_at LIMIT ?" + db.claim_suffix, (now, RELEASE_BATCH)).fetchall()
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
    db.with_values("UPDATE messages SET state = 'accepted', fair_rank = CAST(v.column2 AS BIGINT),"
                   " updated_at = CAST(v.column3 AS DOUBLE PRECISION) FROM (VALUES {values}) AS v"
                   f" WHERE messages.sms_id = v.column1 AND messages.state IN ({_SOURCES_SQL[State.ACCEPTED]})",
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
        f"SELECT MIN(fair_rank) FROM messages WHERE state IN ({_SOURCES_SQL[State.QUEUED]}) AND priority = ?"
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


class _Submitted(NamedTuple):
    sms_id: str
    transport: str
    smsc_ids: tuple[str, ...]
    now: float
    receipt_deadline: float | None


def _mark_all_submitted(db: Db, submits: list[_Submitted]) -> list[ReceiptResult]:
    # The same keys as a receipt takes: a receipt stored early by another node is seen here, or it sees these
    # parts; never neither.
    db.lock_keys([f"{s.transport}\x1f{smsc_id}" for s in submits for smsc_id in s.smsc_ids])
    # Both engines name the columns of a VALUES list column1, column2, ...: (sms_id, transport, due_at, now).
    moved = db.with_values(
        "UPDATE messages SET state = 'submitted', transport = v.column2,"
        " due_at = CAST(v.column3 AS DOUBLE PRECISION), claimed_by = NULL, attempts = attempts + 1,"
        " error_code = '', error_text = '', updated_at = v.column4, submitted_at = v.column4"
        " FROM (VALUES {values}) AS v WHERE messages.sms_id = v.column1"
        f" AND messages.state IN ({_SOURCES_SQL[State.SUBMITTED]})",
        [(s.sms_id, s.transport, s.receipt_deadline, s.now) for s in submits])
    if moved != len(submits):
        if len(submits) == 1:
            _refuse_move(db, submits[0].sms_id, State.SUBMITTED)
        raise _GroupFailed()  # the writer runs each alone, and the one that cannot move says why
    # A message submitted again (after a retry) has its rows already: they take the new ids.
    db.insert_many("parts", ("sms_id", "idx", "transport", "smsc_id", "state", "updated_at"), [
        (s.sms_id, index, s.transport, smsc_id, "submitted", s.now)
        for s in submits for index, smsc_id in enumerate(s.smsc_ids)],
        " ON CONFLICT (sms_id, idx) DO UPDATE SET transport = excluded.transport, smsc_id = excluded.smsc_id,"
        " state = excluded.state, error_code = '', updated_at = excluded.updated_at")
    results = [ReceiptResult(s.sms_id) for s in submits]
    unreceipted = [(position, s) for position, s in enumerate(submits) if s.receipt_deadline is None]
    if unreceipted:
        # No receipt will come: nothing more will be known than this, and the sender hears it now. What `_finish`
        # does, for the whole batch in two statements (a route without receipts is the fastest there is).
        sent = db.with_values(
            "UPDATE messages SET state = 'sent', due_at = NULL, updated_at = CAST(v.column2 AS DOUBLE PRECISION),"
            " done_at = CAST(v.column2 AS DOUBLE PRECISION) FROM (VALUES {values}) AS v"
            f" WHERE messages.sms_id = v.column1 AND messages.state IN ({_SOURCES_SQL[State.SENT]})",
            [(s.sms_id, s.now) for _, s in unreceipted])
        if sent != len(unreceipted):
            raise _GroupFailed()  # moved to submitted just above: only a bug gets here
        _queue_notifications(db, [(s.sms_id, s.now) for _, s in unreceipted])
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
            applied = _apply_receipt(db, Receipt(s.transport, smsc_id, PartOutcome(outcome), error_code, at), s.now)
            if applied.final_state is not None:
                results[position] = applied
    return results


def _queue_notifications(db: Db, finished: Sequence[tuple[str, float]]) -> None:
    """The callback outbox rows of messages that reached a final state in this transaction, (sms_id, now)
    each: they commit with the final states, so a crash cannot lose a notification."""
    db.with_values(
        "INSERT INTO callbacks (sms_id, url, state, due_at, created_at, updated_at)"
        " SELECT m.sms_id, m.callback_url, 'pending', CAST(v.column2 AS DOUBLE PRECISION),"
        " CAST(v.column2 AS DOUBLE PRECISION), CAST(v.column2 AS DOUBLE PRECISION)"
        " FROM (VALUES {values}) AS v JOIN messages m ON m.sms_id = v.column1 WHERE m.callback_url IS NOT NULL",
        finished)


def _move(db: Db, sms_id: str, target: State, assignments: str, params: Sequence[Any]) -> None:
    """Change state with one conditional UPDATE whose allowed sources come from the lifecycle table."""
    statement = (f"UPDATE messages SET state = ?, {assignments} WHERE sms_id = ?"
                 f" AND state IN ({_SOURCES_SQL[target]})")
    cursor = db.execute(statement, (target.value, *params, sms_id))
    if cursor.rowcount == 0:
        _refuse_move(db, sms_id, target)


def _refuse_move(db: Db, sms_id: str, target: State) -> NoReturn:
    """Why a conditional UPDATE to `target` changed nothing."""
    check_transition(sms_id, _state(db, sms_id), target)  # raises: illegal from the current state
    raise ServiceUnavailable(f"message {sms_id}: state changed during the update")


def _history(db: Db, sms_id: str, at: float, state: State, detail: str) -> None:
    db.execute("INSERT INTO history (sms_id, at, state, detail) VALUES (?, ?, ?, ?)", (sms_id, at, state.value, detail))


def _state(db: Db, sms_id: str) -> State:
    row = db.execute("SELECT state FROM messages WHERE sms_id = ?", (sms_id,)).fetchone()
    if row is None:
        raise ServiceUnavailable(f"message {sms_id} is not in the store")
    return State(row[0])


def _finish(db: Db, sms_id: str, target: State, error_code: str, error_text: str, now: float,
            transport: str | None, attempts: int = 0) -> None:
    _move(db, sms_id, target, "error_code = ?, error_text = ?, transport = COALESCE(?, transport), due_at = NULL,"
          " claimed_by = NULL, attempts = attempts + ?, updated_at = ?, done_at = ?",
          (error_code, error_text, transport, attempts, now, now))
    _queue_notifications(db, [(sms_id, now)])


def _apply_receipt(db: Db, receipt: Receipt, now: float) -> ReceiptResult:
    db.lock_keys([f"{receipt.transport}\x1f{receipt.smsc_id}"])
    # SMSC ids may be reused over time (some simulators restart at 0): prefer the part still waiting.
    row = db.execute(
        "SELECT p.sms_id, p.idx, p.state, m.state, m.part_count, m.submitted_at FROM parts p"
        " JOIN messages m ON m.sms_id = p.sms_id"
        " WHERE p.transport = ? AND p.smsc_id = ?"
        f" ORDER BY p.state IN {_WAITING_PART_STATES} DESC, p.updated_at DESC LIMIT 1",
        (receipt.transport, receipt.smsc_id)).fetchone()
    if row is None:
        db.execute("INSERT INTO early_receipts (transport, smsc_id, outcome, error_code, at) VALUES (?,?,?,?,?)",
                   (receipt.transport, receipt.smsc_id, receipt.outcome.value, receipt.error_code, receipt.at or now))
        return ReceiptResult(None)
    sms_id, index, part_state, message_state, part_count, submitted_at = row
    if part_state in _FINAL_PART_STATES:
        return ReceiptResult(sms_id)  # a repeated receipt changes nothing
    if part_count > 1:
        # Receipts for the other parts may be applied by other nodes at this moment: with the row held, the
        # state and the count of delivered parts below include whatever they committed.
        db.lock_message(sms_id)
        message_state = _state(db, sms_id)
    db.execute("UPDATE parts SET state = ?, error_code = ?, updated_at = ? WHERE sms_id = ? AND idx = ?",
               (receipt.outcome.value, receipt.error_code, now, sms_id, index))
    if message_state != State.SUBMITTED:
        return ReceiptResult(sms_id)  # already final (an earlier part failed); the part row keeps the news
    detail = _receipt_detail(index, receipt)
    if not receipt.outcome.final:
        _history(db, sms_id, now, State.SUBMITTED, detail)
        return ReceiptResult(sms_id)
    target = receipt.outcome.message_state
    if receipt.outcome.settled and part_count > 1:
        # Settled when every part is; delivered only when every part was delivered.
        unsettled, first_accepted = db.execute(
            "SELECT SUM(CASE WHEN state NOT IN (?, ?) THEN 1 ELSE 0 END), MIN(CASE WHEN state = ? THEN idx END)"
            " FROM parts WHERE sms_id = ?", (PartOutcome.DELIVERED.value, PartOutcome.ACCEPTED.value,
                                             PartOutcome.ACCEPTED.value, sms_id)).fetchone()
        if unsettled:
            _history(db, sms_id, now, State.SUBMITTED, detail)
            return ReceiptResult(sms_id)
        target = State.DELIVERED if first_accepted is None else State.ACKNOWLEDGED
        if first_accepted is not None and receipt.outcome is PartOutcome.DELIVERED:
            # The reason names the part that was accepted, not the delivered one that came last.
            detail = f"part {first_accepted + 1}: {PartOutcome.ACCEPTED.value}"
    _finish(db, sms_id, target, *_final_reason(target, receipt, detail), now, None)
    return ReceiptResult(sms_id, target, submitted_at)


def _receipt_detail(index: int, receipt: Receipt) -> str:
    return f"part {index + 1}: {receipt.outcome.value}" + (f" err {receipt.error_code}" if receipt.error_code else "")


def _final_reason(target: State, receipt: Receipt, detail: str) -> tuple[str, str]:
    """Error code and text of a message a receipt finishes: none for a delivery; else what the SMSC said."""
    return ("", "") if target is State.DELIVERED else (receipt.error_code, detail)


class _ReceiptAt(NamedTuple):
    receipt: Receipt
    now: float


def _apply_all_receipts(db: Db, items: list[_ReceiptAt]) -> list[ReceiptResult]:
    """`_apply_receipt` for each, with the common case (the final receipt of a one-part message waiting for
    it) done for all at once: four statements per batch instead of four per receipt. Every other receipt
    (several parts, intermediate, repeated, early, or twice in this batch) goes through `_apply_receipt`."""
    if len(items) == 1:
        return [_apply_receipt(db, items[0].receipt, items[0].now)]
    keys = [(item.receipt.transport, item.receipt.smsc_id) for item in items]
    db.lock_keys([f"{transport}\x1f{smsc_id}" for transport, smsc_id in keys])
    # The part each receipt is for, preferred as `_apply_receipt` prefers it: still waiting, then the newest.
    parts: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in db.select_with_values(
            "SELECT p.transport, p.smsc_id, p.sms_id, p.idx, p.state, m.state, m.part_count, m.submitted_at,"
            " p.updated_at FROM (VALUES {values}) AS v"
            " JOIN parts p ON p.transport = v.column1 AND p.smsc_id = v.column2"
            " JOIN messages m ON m.sms_id = p.sms_id", sorted(set(keys))):
        key = (row[0], row[1])
        rank = (row[4] in _WAITING_PART_SET, row[8])
        held = parts.get(key)
        if held is None or rank > (held[4] in _WAITING_PART_SET, held[8]):
            parts[key] = row
    repeated = {key for key, count in Counter(keys).items() if count > 1}
    results: list[ReceiptResult | None] = [None] * len(items)
    finished: list[tuple[int, str, int, str, float | None]] = []  # position, sms_id, idx, detail, submitted_at
    for position, (item, key) in enumerate(zip(items, keys, strict=True)):
        row = parts.get(key)
        if (row is not None and key not in repeated and item.receipt.outcome.final and row[6] == 1
                and row[5] == State.SUBMITTED.value and row[4] not in _FINAL_PART_STATES):
            detail = _receipt_detail(row[3], item.receipt)
            finished.append((position, row[2], row[3], detail, row[7]))
    if finished:
        db.with_values(
            "UPDATE parts SET state = v.column3, error_code = v.column4,"
            " updated_at = CAST(v.column5 AS DOUBLE PRECISION) FROM (VALUES {values}) AS v"
            " WHERE parts.sms_id = v.column1 AND parts.idx = CAST(v.column2 AS INTEGER)",
            [(sms_id, index, items[position].receipt.outcome.value, items[position].receipt.error_code,
              items[position].now) for position, sms_id, index, _, _ in finished])
        # The states were read in this transaction under the keys' locks: a count that differs is a bug or
        # another node's doing, and each receipt is then applied alone.
        moved = db.with_values(
            "UPDATE messages SET state = v.column2, error_code = v.column3, error_text = v.column4,"
            " due_at = NULL, claimed_by = NULL, updated_at = CAST(v.column5 AS DOUBLE PRECISION),"
            " done_at = CAST(v.column5 AS DOUBLE PRECISION)"
            " FROM (VALUES {values}) AS v WHERE messages.sms_id = v.column1 AND messages.state = 'submitted'",
            [(sms_id, *_final_columns(items[position].receipt, detail), items[position].now)
             for position, sms_id, _, detail, _ in finished])
        if moved != len(finished):
            raise _GroupFailed()
        _queue_notifications(db, [(sms_id, items[position].now) for position, sms_id, _, _, _ in finished])
        for position, sms_id, _, _, submitted_at in finished:
            results[position] = ReceiptResult(sms_id, items[position].receipt.outcome.message_state, submitted_at)
    return [result if result is not None else _apply_receipt(db, item.receipt, item.now)
            for item, result in zip(items, results, strict=True)]


def _final_columns(receipt: Receipt, detail: str) -> tuple[str, str, str]:
    """State, error code and error text of a one-part message its final receipt finishes."""
    target = receipt.outcome.message_state
    return (target.value, *_final_reason(target, receipt, detail))


def _incoming(db: Db, incoming_id: str) -> IncomingView | None:
    row = db.execute("SELECT incoming_id, transport, sender, recipient, text, received_at FROM incoming"
                     " WHERE incoming_id = ?", (incoming_id,)).fetchone()
    return IncomingView(*row) if row else None


def _view(db: Db, sms_id: str, detail: bool = True) -> MessageView | None:
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
