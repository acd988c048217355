"""Live events for operators (`asterisk-sendsms tail`): what happened to which message, fanned out to
subscribers in memory (a slow subscriber loses events rather than slowing the gateway down); and a wake-up for
whoever waits on one message (a call waiting for its SMS to be submitted)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["EventHub"]

QUEUE_LIMIT = 1000


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._watchers: dict[str, set[asyncio.Event]] = {}

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Called with every event, synchronously (metrics)."""
        self._listeners.append(listener)

    def publish(self, kind: str, sms_id: str, **details: Any) -> None:
        for watcher in self._watchers.get(sms_id, ()):
            watcher.set()
        if not self._subscribers and not self._listeners:
            return
        event = {"time": time.time(), "event": kind, "sms_id": sms_id, **details}
        for listener in self._listeners:
            listener(event)
        for queue in self._subscribers:
            if queue.full():
                continue  # this subscriber is behind: it misses events, the gateway does not wait
            queue.put_nowait(event)

    @asynccontextmanager
    async def watching(self, sms_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set at every event of this message while the block runs (the waiter clears it)."""
        watcher = asyncio.Event()
        self._watchers.setdefault(sms_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            watchers = self._watchers[sms_id]
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[sms_id]

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
