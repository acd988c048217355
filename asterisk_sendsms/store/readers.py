"""The store's readers: a few threads, each with a connection of its own, that run read-only operations (a
message's status, the lists, the status page's counts) in a snapshot of their own, so that no read waits in the
writer's queue and no write waits behind a long read (SQLite in WAL mode and PostgreSQL let both run at once)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from asterisk_sendsms.store.db import Db

__all__ = ["Readers", "settle"]

T = TypeVar("T")
Read = Callable[[Db], Any]


class Readers:
    """`connect` opens a reader's connection (on its thread); `translate` turns an error into what the caller
    gets, as the writer does."""

    def __init__(self, connect: Callable[[], Db], translate: Callable[[Exception, str], Exception],
                 count: int) -> None:
        self._connect = connect
        self._translate = translate
        self._queue: queue.SimpleQueue[tuple[Read, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, daemon=True, name=f"store-reader-{n}")
                         for n in range(count)]
        for thread in self._threads:
            thread.start()

    async def run(self, read: Callable[[Db], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((read, future))
        return await future

    async def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    def _serve(self) -> None:
        db: Db | None = None
        try:
            while (item := self._queue.get()) is not None:
                read, future = item
                result, error = None, None
                # A connection the database broke off while idle (a restart, an administrator) fails its next
                # read: a read changes nothing, so it is tried once more on a new connection.
                for _ in (1, 2):
                    fresh = db is None
                    try:
                        if db is None:
                            db = self._connect()
                        db.begin_read()
                        try:
                            result = read(db)
                        finally:
                            db.rollback()  # a read wrote nothing: this only lets its snapshot go
                        error = None
                        break
                    except Exception as exc:
                        error = self._translate(exc, "message store error")
                        if db is None or not db.broken:
                            break
                        db.close()
                        db = None
                        if fresh:  # the second try always runs on a new connection: it ends here
                            break
                future.get_loop().call_soon_threadsafe(settle, future, result, error)
        finally:
            if db is not None:
                db.close()


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Hand an operation's outcome to its caller (on the caller's loop)."""
    if future.done():  # the caller was cancelled; a write stands regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
