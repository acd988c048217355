"""The SQLite store: one file in WAL mode, owned by one daemon (a lock file says so), written by the shared
SQL operations on one thread that commits concurrent operations together, so durable accept stays fast, and read
beside it on connections of its readers (WAL lets a read and a write run at once)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.core.errors import ServiceUnavailable
from asterisk_sendsms.store.files import make_private
from asterisk_sendsms.store.schema import Dialect, migrations
from asterisk_sendsms.store.sql import Cursor, Db, SqlStore

__all__ = ["MIGRATIONS", "SqliteStore"]


MIGRATIONS = migrations(Dialect.SQLITE)


class SqliteDb(Db):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def begin(self) -> None:
        # IMMEDIATE takes the write lock now: a reader-turned-writer can never fail with SQLITE_BUSY mid-batch.
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()

    @property
    def broken(self) -> bool:
        return False  # a file does not go away like a server; each error is reported by its operation

    def table_exists(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (name,)).fetchone() is not None

    def minute(self, column: str) -> str:
        return f"CAST({column} / 60 AS INTEGER)"


class SqliteStore(SqlStore):
    def __init__(self, config: StoreConfig) -> None:
        super().__init__(config.node, MIGRATIONS)
        self._path = config.path
        self._synchronous = config.synchronous.upper()
        self._lock_fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def where(self) -> str:
        return str(self._path)

    async def _acquire(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            for suffix in ("", "-wal", "-shm"):  # SQLite gives its journals the database file's mode
                make_private(self._path.with_name(self._path.name + suffix))
            self._lock_fd = os.open(str(self._path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release()
            raise ServiceUnavailable(f"another asterisk-sendsms daemon is using {self._path}") from None
        except OSError as exc:
            self._release()
            raise ServiceUnavailable(f"cannot open the message store {self._path}: {exc.strerror}") from None

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self, owner: bool) -> Db:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")
        except BaseException:
            conn.close()
            raise
        return SqliteDb(conn)

    def _is_database_error(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.Error)
