"""The PostgreSQL store: one database shared by several gateway nodes. Claims skip rows other nodes hold
(`FOR UPDATE SKIP LOCKED`), leases hand a dead node's messages to the others, and advisory locks order a
receipt against the submit it belongs to whichever node each arrives on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.core.errors import ServiceUnavailable
from asterisk_sendsms.store.schema import Dialect, migrations
from asterisk_sendsms.store.sql import Cursor, Db, SqlStore

__all__ = ["MIGRATIONS", "PostgresStore"]

CONNECT_TIMEOUT = 5
# A statement that waits longer than this (a locked table, a hung server) fails instead of stalling the queue.
STATEMENT_TIMEOUT_MS = 30_000
# Advisory lock namespaces (first key of the two-key form), so our locks never meet another application's.
_LOCK_SCHEMA, _LOCK_NODE, _LOCK_KEY = 0x5345_4E44, 0x5345_4E45, 0x5345_4E46

MIGRATIONS = migrations(Dialect.POSTGRESQL)


class PostgresDb(Db):
    claim_suffix = " FOR UPDATE SKIP LOCKED"
    history_order = "seq"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._translated: dict[str, str] = {}

    def _sql(self, sql: str) -> str:
        # The shared statements hold no literal '?' or '%', so placeholders translate by replacement.
        translated = self._translated.get(sql)
        if translated is None:
            translated = self._translated[sql] = sql.replace("?", "%s")
        return translated

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    def begin(self) -> None:
        self._conn.execute("BEGIN")

    def begin_read(self) -> None:
        # REPEATABLE READ: one snapshot for all the statements of a read (READ COMMITTED takes one per statement,
        # and the status page's counts would not add up); a read-only transaction never fails to serialize.
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                self._conn.execute("ROLLBACK")
            except psycopg.OperationalError:
                pass  # the connection is gone, and with it the transaction; `broken` says so

    def close(self) -> None:
        if not self.broken:
            try:
                # Released now, not when the server gets round to ending the session: a daemon restarted at
                # once must find its node free.
                self._conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                pass
        self._conn.close()

    @property
    def broken(self) -> bool:
        return self._conn.closed or self._conn.broken

    def table_exists(self, name: str) -> bool:
        row = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        return bool(row and row[0])

    def minute(self, column: str) -> str:
        return f"FLOOR({column} / 60)::BIGINT"

    def lock_schema(self) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_SCHEMA,))

    def lock_keys(self, keys: Sequence[str]) -> None:
        # In one order within a call, so two calls locking overlapping sets cannot deadlock on them. A transaction
        # that makes several calls (a group commit's operations) can still meet another in the opposite order:
        # PostgreSQL then breaks the deadlock and the writer runs that batch's operations one by one.
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(k) AS h"
                           " FROM unnest(%s::text[]) AS k ORDER BY 1) AS keys", (_LOCK_KEY, list(keys)))

    def lock_message(self, sms_id: str) -> None:
        self._conn.execute("SELECT 1 FROM messages WHERE sms_id = %s FOR UPDATE", (sms_id,))

    def own_node(self, node: str) -> bool:
        """Hold, for this connection's life, the lock that says a daemon runs as `node`."""
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_NODE, node)).fetchone()
        return bool(row and row[0])


class PostgresStore(SqlStore):
    def __init__(self, config: StoreConfig) -> None:
        if not config.url:
            raise ValueError("PostgresStore needs store.url")
        super().__init__(config.node, MIGRATIONS, writers=config.connections)
        self._url = config.url
        self._where = config.where
        self._node_name = config.node

    @property
    def where(self) -> str:
        return self._where

    def _connect(self, owner: bool) -> Db:
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name=f"asterisk-sendsms {self._node_name}",
                               options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                               keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        db = PostgresDb(conn)
        try:
            if owner and not db.own_node(self._node_name):
                raise ServiceUnavailable(f"another asterisk-sendsms daemon runs as node {self._node_name!r} on "
                                         f"{self._where}: give each node its own store.node")
        except BaseException:
            db.close()
            raise
        return db

    def _is_database_error(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.Error)

    def _is_retryable(self, exc: Exception) -> bool:
        return isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure)
