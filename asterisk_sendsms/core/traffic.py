"""Traffic classes: which messages the dispatcher serves first. A caller waiting on the line must never wait
behind a campaign: `interactive` goes before `normal`, which goes before `bulk`."""

from __future__ import annotations

import heapq
import itertools
from enum import StrEnum
from typing import Generic, TypeVar

from asterisk_sendsms.core.errors import InvalidParameter

__all__ = ["CALL_PRIORITY", "CSV_PRIORITY", "DEFAULT_PRIORITY", "Order", "Priority", "WaitingLine",
           "parse_priority"]

T = TypeVar("T")
# (class rank, fair rank), as OutboundMessage.order gives it: lower goes first.
Order = tuple[int, int]


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    NORMAL = "normal"
    BULK = "bulk"

    # A class is hashed as the text it is equal to, in C: Enum's own hash is a Python call, and every accepted
    # message's class is looked up a few times on the writer thread.
    __hash__ = str.__hash__

    @property
    def rank(self) -> int:
        """Lower goes first; the store orders the queue by it."""
        return _RANKS[self]

    @classmethod
    def of_rank(cls, rank: int) -> Priority:
        return _BY_RANK[rank]

    @classmethod
    def named(cls, text: str) -> Priority:
        """The class a request or the configuration names, in any case; ValueError if none."""
        return cls(text.strip().lower())


_RANKS = {Priority.INTERACTIVE: 0, Priority.NORMAL: 1, Priority.BULK: 2}
_BY_RANK = {rank: priority for priority, rank in _RANKS.items()}

# What a message is when its sender does not say (the HTTP API, JSON, `send`).
DEFAULT_PRIORITY = Priority.NORMAL
# A message sent from a call (AGI, FastAGI, ARI, OzML, the Call command's scripts): somebody is listening.
CALL_PRIORITY = Priority.INTERACTIVE
# A file of recipients (`send --csv`): a campaign.
CSV_PRIORITY = Priority.BULK


class WaitingLine(Generic[T]):
    """Submits waiting for a transport: by class, then bulk by its users' turns, then in the order they came.
    Every transport that makes submits wait serves them in this order."""

    def __init__(self) -> None:
        self._heap: list[tuple[Order, int, T]] = []
        self._arrivals = itertools.count()

    def push(self, item: T, order: Order) -> None:
        heapq.heappush(self._heap, (order, next(self._arrivals), item))

    def pop(self) -> T | None:
        """The first in line, taken out of it; None if nobody waits."""
        return heapq.heappop(self._heap)[2] if self._heap else None

    def remove(self, item: T) -> None:
        """`item` no longer waits (its sender gave up)."""
        self._heap = [entry for entry in self._heap if entry[2] is not item]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)


def parse_priority(text: str, parameter: str = "Priority", command: str = "SendSms") -> Priority:
    """A class named in a request, in any case; Ozeki code 302 naming `parameter` otherwise."""
    try:
        return Priority.named(text)
    except ValueError:
        raise InvalidParameter(parameter, command, "expected interactive, normal or bulk") from None
