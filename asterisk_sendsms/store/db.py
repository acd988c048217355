"""`Db`, one connection as the store's operations see it (statements with `?` placeholders, the few things in
which SQLite and PostgreSQL differ as methods), and `GroupFailed`, how a grouped operation hands its batch back
to the writer to be run one by one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Cursor", "Db", "GroupFailed"]

# Rows per statement of `Db.with_values` at most: 13 columns stay far below SQLite's 32,766 variables.
_CHUNK_ROWS = 512


class GroupFailed(Exception):
    """A grouped operation could not do all its members' work: run each alone to find whose it was."""


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

    def begin_read(self) -> None:
        """Begin a transaction that only reads: one snapshot for its statements, no lock on writers."""
        self.execute("BEGIN")

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

