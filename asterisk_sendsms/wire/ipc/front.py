"""The messages between the daemon and an HTTP front worker: a worker's batch of validated messages, the
daemon's outcome of it (the whole batch refused, or each refused message with its refusal's kind), and the failed
logins the daemon tells every worker."""

from __future__ import annotations

from typing import Any, NamedTuple

from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.wire.ipc.framing import NUMBER, OPTIONAL_NUMBER, OPTIONAL_STR, Codec, Kind, check

__all__ = ["FROM_WORKER", "TO_WORKER", "Batch", "FailedLogin", "Outcome", "Refusal"]

# Each message's tag; its encode writes it and its end's Codec reads by it.
_BATCH, _OUTCOME, _FAILED_LOGIN = "batch", "outcome", "failed-login"

_MESSAGE: tuple[Kind, ...] = (
    str, str, OPTIONAL_STR, str, str, str, int, OPTIONAL_STR, NUMBER, NUMBER, str, OPTIONAL_NUMBER, OPTIONAL_NUMBER)


def _message_row(m: NewMessage) -> tuple[Any, ...]:
    return (m.sms_id, m.username, m.sender, m.recipient, m.text, m.coding.value, m.part_count, m.callback_url,
            m.created_at, m.expires_at, m.priority.value, m.validity_period, m.send_at)


def _message(row: Any) -> NewMessage:
    if type(row) is not tuple or len(row) != len(_MESSAGE) or not all(map(isinstance, row, _MESSAGE)):
        raise ValueError("a message whose fields are of the wrong number or kind")
    (sms_id, username, sender, recipient, text, coding, part_count, callback_url, created_at, expires_at,
     priority, validity_period, send_at) = row
    return NewMessage(sms_id, username, sender, recipient, text, Coding(coding), part_count, callback_url,
                      created_at, expires_at, Priority(priority), validity_period, send_at)


class Batch(NamedTuple):
    """Worker -> daemon: the messages validated in one turn of the worker's event loop, to be committed."""

    number: int  # the worker's, to match the outcome
    messages: tuple[NewMessage, ...]

    def encode(self) -> tuple[Any, ...]:
        return (_BATCH, self.number, [_message_row(message) for message in self.messages])

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Batch:
        # As `check` would, inline: every accepted HTTP request comes this way.
        if type(row) is not tuple or len(row) != 3 or type(row[1]) is not int or type(row[2]) is not list:
            check(row, (str, int, list))
        return cls(row[1], tuple(map(_message, row[2])))


class Refusal(NamedTuple):
    """One message of a batch refused on its own: its position in the batch, the refusal's kind (the name of its
    class in core/errors.py, for the worker to answer it as the daemon would) and its text."""

    position: int
    kind: str
    message: str


_REFUSAL: tuple[Kind, ...] = (int, str, str)


def _refusal(row: Any) -> Refusal:
    if type(row) is not tuple or len(row) != len(_REFUSAL) or not all(map(isinstance, row, _REFUSAL)):
        raise ValueError("a refusal whose fields are of the wrong number or kind")
    return Refusal._make(row)


class Outcome(NamedTuple):
    """Daemon -> worker: what came of a batch. `error`: the message of the `ServiceUnavailable` that refused
    the whole batch, or None; then `refused`, the messages refused on their own (the others are accepted)."""

    number: int
    error: str | None
    refused: tuple[Refusal, ...] = ()

    def encode(self) -> tuple[Any, ...]:
        return (_OUTCOME, self.number, self.error, [tuple(refusal) for refusal in self.refused])

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Outcome:
        if (type(row) is not tuple or len(row) != 4 or type(row[1]) is not int or type(row[3]) is not list
                or not (row[2] is None or type(row[2]) is str)):
            check(row, (str, int, OPTIONAL_STR, list))
        return cls(row[1], row[2], tuple(map(_refusal, row[3])) if row[3] else ())


class FailedLogin(NamedTuple):
    """Daemon -> worker: a login failed (`key`: the address or user it counts against) at `at`."""

    key: str
    at: float

    def encode(self) -> tuple[Any, ...]:
        return (_FAILED_LOGIN, *self)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> FailedLogin:
        check(row, (str, str, NUMBER))
        return cls(row[1], row[2])


FROM_WORKER = Codec({_BATCH: Batch.decode})
TO_WORKER = Codec({_OUTCOME: Outcome.decode, _FAILED_LOGIN: FailedLogin.decode})
