"""The store's writer threads: each runs the operations queued meanwhile in one transaction (group commit),
falls back to one by one when one of them fails, retries what the database broke off (deadlocks), reconnects,
translates database errors into `ServiceUnavailable` logged once per outage, and brings the schema to its
version at start. Operations that only read go to the `readers` instead, beside the writers."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from asterisk_sendsms.core.errors import ServiceUnavailable, SmsGatewayError
from asterisk_sendsms.store.db import Db
from asterisk_sendsms.store.readers import Readers, settle

__all__ = ["Engine", "Grouped"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Operation = Callable[[Db], Any]

_BATCH_LIMIT = 1024
# How long the writer waits for more records of submits before committing them (see `_gather`). A crash
# in this time sends those messages again: as many as a window delivers in 2 ms.
OUTCOME_LINGER = 0.002
# After a failed connection attempt, operations fail at once for this long instead of each waiting for a
# connect timeout of its own.
RECONNECT_INTERVAL = 1.0
# An outage ends when operations have gone through for this long since the last failure: a full disk still
# lets reads and small writes through now and then, which must not be logged as a recovery each time.
OUTAGE_QUIET = 1.0
# Deadlocks between nodes (PostgreSQL breaks them by aborting one side) are retried this often.
_RETRIES = 3
# Reader threads (each with its connection): a long read (the status page's counts) leaves one for the others.
READERS = 2


class Engine(ABC):
    """Every operation of the store goes through `_run`; a writer thread runs the operations queued meanwhile in one
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
        self._readers: Readers | None = None

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
                self._readers = Readers(self._open_reader, self._translate, READERS)
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
        if self._readers is not None:
            await self._readers.close()
            self._readers = None
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
            loop.call_soon_threadsafe(settle, ready, None, self._translate(exc, "cannot open the message store"))
            return
        loop.call_soon_threadsafe(settle, ready, found, None)
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

    def _open_reader(self) -> Db:
        """A reader's connection; after a failed attempt, readers fail at once for a while, as writers do."""
        if time.monotonic() < self._retry_connect_at:
            raise self._still_failing("the message store is unreachable")
        try:
            return self._connect(owner=False)
        except Exception:
            self._retry_connect_at = time.monotonic() + RECONNECT_INTERVAL
            raise

    async def _read(self, operation: Callable[[Db], T]) -> T:
        """Run an operation that writes nothing on a reader, beside the writers."""
        if self._readers is None:
            raise ServiceUnavailable("the message store is not open")
        return await self._readers.run(operation)

    async def _run(self, operation: Callable[[Db], T]) -> T:
        if not self._threads:
            raise ServiceUnavailable("the message store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.put((operation, future))
        return await future


def _logged(error: ServiceUnavailable) -> ServiceUnavailable:
    error.logged = True
    return error


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        settle(future, result, error)


class Grouped:
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


def _run_in_groups(db: Db, operations: Sequence[Operation]) -> list[Any]:
    """Run the operations in order, except that grouped ones of a kind all run where the first of them
    stands. They touch only their own messages, so moving them up can only let a later operation of the batch
    see their work sooner, which it handles anyway (a receipt finds its part instead of being kept for it)."""
    groups: dict[Callable[[Db, list[Any]], list[Any]], list[int]] = {}
    for index, operation in enumerate(operations):
        if isinstance(operation, Grouped):
            groups.setdefault(operation.run_all, []).append(index)
    results: list[Any] = [None] * len(operations)
    for index, operation in enumerate(operations):
        if not isinstance(operation, Grouped):
            results[index] = operation(db)
        elif (members := groups.pop(operation.run_all, None)) is not None:
            arguments = [cast(Grouped, operations[member]).argument for member in members]
            for member, result in zip(members, operation.run_all(db, arguments), strict=True):
                results[member] = result
    return results
