"""The window of outstanding submit_sm and the pacing of an SMPP connection, without I/O: who may send now,
who is next when a slot is freed, and how long a send must wait for the rate or a throttling pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from asterisk_sendsms.core.traffic import Order, WaitingLine

__all__ = ["Pacer", "SubmitWindow"]

T = TypeVar("T")
THROTTLE_PAUSE_INITIAL = 0.5
THROTTLE_PAUSE_MAX = 30.0


class SubmitWindow(Generic[T]):
    """Slots for `size` submits in flight; the others wait by rank (their traffic class: a caller's message
    before a campaign's), then in the order they came. A freed slot is handed to the first waiting submit by
    `leave`, so the caller can send it in the same callback that saw the response: with a small window, each
    turn of the event loop between a response and the next submit is throughput lost."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._waiting: WaitingLine[T] = WaitingLine()

    def enter(self, item: T, rank: Order = (0, 0)) -> bool:
        """True: `item` holds a slot now. False: it waits for one (`leave` will return it)."""
        if self.in_use < self.size and not self._waiting:
            self.in_use += 1
            return True
        self._waiting.push(item, rank)
        return False

    def leave(self) -> T | None:
        """A holder gives its slot up; returns the waiting item that holds it now, if any."""
        successor = self._waiting.pop()
        if successor is None:  # else the slot passes on to it: in_use stays
            self.in_use -= 1
        return successor

    def withdraw(self, item: T) -> None:
        """A waiting item no longer wants a slot (its sender gave up)."""
        self._waiting.remove(item)

    @property
    def waiting(self) -> int:
        return len(self._waiting)


@dataclass
class Pacer:
    """Messages-per-second pacing (0: none) and the pause after ESME_RTHROTTLED/ESME_RMSGQFUL."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    next_slot: float = 0.0
    paused_until: float = 0.0
    pause: float = THROTTLE_PAUSE_INITIAL

    def reserve(self) -> float:
        """Take the next send time; returns how many seconds from now it is (0: send now)."""
        now = self.clock()
        start = max(now, self.next_slot, self.paused_until)
        if self.rate > 0:
            self.next_slot = start + 1.0 / self.rate
        return start - now

    def slow_down(self) -> float:
        """The SMSC asked us to slow down: pause, longer each time until a submit goes through."""
        self.paused_until = self.clock() + self.pause
        pause, self.pause = self.pause, min(THROTTLE_PAUSE_MAX, self.pause * 2)
        return pause

    def recovered(self) -> None:
        self.pause = THROTTLE_PAUSE_INITIAL

    @property
    def throttled(self) -> bool:
        return self.clock() < self.paused_until
