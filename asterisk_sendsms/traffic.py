"""Traffic classes: which messages the dispatcher serves first. A caller waiting on the line must never wait
behind a campaign: `interactive` goes before `normal`, which goes before `bulk`."""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidParameter

__all__ = ["CALL_PRIORITY", "CSV_PRIORITY", "DEFAULT_PRIORITY", "Priority", "parse_priority"]


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    NORMAL = "normal"
    BULK = "bulk"

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


def parse_priority(text: str, parameter: str = "Priority", command: str = "SendSms") -> Priority:
    """A class named in a request, in any case; Ozeki code 302 naming `parameter` otherwise."""
    try:
        return Priority.named(text)
    except ValueError:
        raise InvalidParameter(parameter, command, "expected interactive, normal or bulk") from None
