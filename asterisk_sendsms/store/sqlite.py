"""The SQLite store: one file in WAL mode, owned by one daemon (a lock file says so), written by the shared
SQL operations on one thread that commits concurrent operations together, so durable accept stays fast."""

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
from asterisk_sendsms.store.sql import Cursor, Db, SqlStore

__all__ = ["MIGRATIONS", "SqliteStore"]


def _statements(script: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in script.split(";\n") if s.strip())


# Version N of the schema is the first N scripts. Never edit a released script: add the next one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _statements("""
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
"""),
    # Claims name their node (shared with the PostgreSQL store, where several daemons claim from one queue).
    # A message claimed by the old column is due again when its lease passes.
    _statements("""
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
ALTER TABLE messages DROP COLUMN claimed;
ALTER TABLE callbacks ADD COLUMN claimed_by TEXT;
ALTER TABLE callbacks DROP COLUMN claimed;
"""),
    # Each notification's host, filled when it is first seen by a claim: a host's share of the notifier's
    # slots is capped in the claim itself, so a hanging receiver cannot hold them all.
    _statements("""
ALTER TABLE callbacks ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE INDEX callbacks_host_due ON callbacks (host, due_at) WHERE state = 'pending';
"""),
    # Traffic classes (traffic.Priority ranks: 0 interactive, 1 normal, 2 bulk), the bulk users' turns, and the
    # validity period a sender asked for.
    _statements("""
ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN fair_rank INTEGER NOT NULL DEFAULT 0;
DROP INDEX messages_dispatch;
CREATE INDEX messages_dispatch ON messages (priority, fair_rank, due_at) WHERE state IN ('accepted', 'queued');
CREATE TABLE fair_shares (username TEXT PRIMARY KEY, last_rank INTEGER NOT NULL);
ALTER TABLE messages ADD COLUMN validity_period REAL;
"""),
    # Sending policy. Scheduled messages (SendAt, a user's max_rate) wait outside the dispatch index; per-user
    # quota counters and rate turns; the opt-out list: numbers that texted STOP (or were added by an
    # operator), per sender ('' for all).
    _statements("""
ALTER TABLE messages ADD COLUMN send_at REAL;
ALTER TABLE messages ADD COLUMN paced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_held ON messages (due_at) WHERE state = 'scheduled';
CREATE TABLE quota_use (username TEXT NOT NULL, period TEXT NOT NULL, used INTEGER NOT NULL,
                        PRIMARY KEY (username, period));
CREATE TABLE user_turns (username TEXT PRIMARY KEY, next_free REAL NOT NULL);
CREATE TABLE optouts (
    number     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at REAL NOT NULL,
    source     TEXT NOT NULL,
    PRIMARY KEY (number, scope)
);
"""),
)


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
