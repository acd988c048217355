"""Who talks to the modem next: it takes one command at a time, and of the submits waiting for it a caller's
message goes before a campaign's (the order every transport serves waiting submits in, traffic.WaitingLine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from asterisk_sendsms.core.traffic import Order, WaitingLine

__all__ = ["FIRST", "PriorityGate"]

# Before any message's order (class ranks start at 0): the modem's own short commands, such as reading a
# stored status report, must not wait behind a campaign's queue.
FIRST: Order = (-1, 0)


class PriorityGate:
    """A lock whose waiters get it by order, then by arrival, instead of by arrival alone."""

    def __init__(self) -> None:
        self._held = False
        self._line: WaitingLine[asyncio.Future[None]] = WaitingLine()

    @contextlib.asynccontextmanager
    async def turn(self, order: Order = FIRST) -> AsyncIterator[None]:
        await self._enter(order)
        try:
            yield
        finally:
            self._leave()

    @property
    def waiting(self) -> int:
        return len(self._line)

    async def _enter(self, order: Order) -> None:
        if not self._held:
            self._held = True
            return
        turn = asyncio.get_running_loop().create_future()
        self._line.push(turn, order)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():
                self._line.remove(turn)
            else:
                # Handed the gate in the same turn of the loop as it was cancelled: pass it on, or it stays
                # held by nobody.
                self._leave()
            raise

    def _leave(self) -> None:
        while (successor := self._line.pop()) is not None:
            # One cancelled a moment ago may not have taken itself out of the line yet.
            if not successor.done():
                successor.set_result(None)  # the gate passes on: it stays held
                return
        self._held = False
