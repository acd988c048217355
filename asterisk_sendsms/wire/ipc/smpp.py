"""The messages between the daemon and an SMPP child: submits (and their cancellation) one way, their outcomes
the other; the link's health; receipts and incoming SMS the child hands over, and the daemon's word that it
stored them (the child acknowledges them to the SMSC only then); the daemon's stop."""

from __future__ import annotations

from typing import Any, NamedTuple

from asterisk_sendsms.core.encoding import Coding, EncodedMessage, Segment
from asterisk_sendsms.core.model import IncomingPart, OutboundMessage, PartOutcome, Receipt
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.wire.ipc.framing import NUMBER, OPTIONAL_STR, Codec, check

__all__ = ["FROM_CHILD", "TO_CHILD", "Cancel", "Failed", "Health", "Incoming", "ReceiptHeard", "Stop", "Stored",
           "Submit", "Submitted"]


# Each message's tag; its encode writes it and its end's Codec reads by it.
_SUBMIT = "submit"
_CANCEL = "cancel"
_STORED = "stored"
_STOP = "stop"
_SUBMITTED = "done"
_FAILED = "failed"
_HEALTH = "health"
_RECEIPT_HEARD = "receipt"
_INCOMING = "incoming"


def _segment(row: Any) -> Segment:
    if type(row) is not tuple or len(row) != 2 or type(row[0]) is not str or type(row[1]) is not bytes:
        raise ValueError("a segment that is not (text, payload)")
    return Segment(row[0], row[1])


class Submit(NamedTuple):
    """Daemon -> child: submit `message`, encoded; `number` matches the outcome (`Submitted`, `Failed`)."""

    number: int
    message: OutboundMessage
    encoded: EncodedMessage

    def encode(self) -> tuple[Any, ...]:
        m, encoded = self.message, self.encoded
        return (_SUBMIT, self.number, m.sms_id, m.sender, m.recipient, m.text, m.previous_attempts, m.expires_at,
                m.priority.value, m.fair_rank, m.smsc_validity, encoded.coding.value,
                [(segment.text, segment.payload) for segment in encoded.segments])

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Submit:
        check(row, (str, int, str, OPTIONAL_STR, str, str, int, NUMBER, str, int, bool, str, list))
        (_, number, sms_id, sender, recipient, text, attempts, expires_at, priority, fair_rank, smsc_validity,
         coding, segments) = row
        message = OutboundMessage(sms_id, sender, recipient, text, attempts, expires_at, Priority(priority),
                                  fair_rank, smsc_validity)
        return cls(number, message, EncodedMessage(Coding(coding), tuple(map(_segment, segments))))


class Cancel(NamedTuple):
    """Daemon -> child: the dispatcher no longer waits for submit `number`."""

    number: int

    def encode(self) -> tuple[Any, ...]:
        return (_CANCEL, self.number)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Cancel:
        check(row, (str, int))
        return cls(row[1])


class Stored(NamedTuple):
    """Daemon -> child: receipt or incoming SMS `number` is stored (`error` None), or could not be."""

    number: int
    error: str | None

    def encode(self) -> tuple[Any, ...]:
        return (_STORED, self.number, self.error)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Stored:
        check(row, (str, int, OPTIONAL_STR))
        return cls(row[1], row[2])


class Stop(NamedTuple):
    """Daemon -> child: unbind and exit."""


    def encode(self) -> tuple[Any, ...]:
        return (_STOP,)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Stop:
        check(row, (str,))
        return cls()


class Submitted(NamedTuple):
    """Child -> daemon: submit `number` was accepted by the SMSC, with the id of each part."""

    number: int
    ids: tuple[str, ...]

    def encode(self) -> tuple[Any, ...]:
        return (_SUBMITTED, self.number, list(self.ids))

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Submitted:
        check(row, (str, int, list))
        ids = tuple(row[2])
        if not all(type(smsc_id) is str for smsc_id in ids):
            raise ValueError("an SMSC id that is no text")
        return cls(row[1], ids)


class Failed(NamedTuple):
    """Child -> daemon: submit `number` failed, for good (`permanent`) or for now, with the transport's code."""

    number: int
    permanent: bool
    message: str
    code: str

    def encode(self) -> tuple[Any, ...]:
        return (_FAILED, self.number, self.permanent, self.message, self.code)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Failed:
        check(row, (str, int, bool, str, str))
        return cls(row[1], row[2], row[3], row[4])


class Health(NamedTuple):
    """Child -> daemon: the transport's health changed (the fields of `TransportHealth` the child knows)."""

    ready: bool
    state: str
    detail: str
    in_flight: int

    def encode(self) -> tuple[Any, ...]:
        return (_HEALTH, self.ready, self.state, self.detail, self.in_flight)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Health:
        check(row, (str, bool, str, str, int))
        return cls(row[1], row[2], row[3], row[4])


class ReceiptHeard(NamedTuple):
    """Child -> daemon: a receipt to store (`number` matches the daemon's `Stored`)."""

    number: int
    receipt: Receipt

    def encode(self) -> tuple[Any, ...]:
        r = self.receipt
        return (_RECEIPT_HEARD, self.number, r.transport, r.smsc_id, r.outcome.value, r.error_code, r.at)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> ReceiptHeard:
        check(row, (str, int, str, str, str, str, NUMBER))
        return cls(row[1], Receipt(row[2], row[3], PartOutcome(row[4]), row[5], row[6]))


class Incoming(NamedTuple):
    """Child -> daemon: an incoming SMS (or one part of it) to store (`number` matches the daemon's `Stored`)."""

    number: int
    part: IncomingPart

    def encode(self) -> tuple[Any, ...]:
        p = self.part
        return (_INCOMING, self.number, p.transport, p.sender, p.recipient, p.text, p.received_at, p.reference,
                p.total, p.sequence)

    @classmethod
    def decode(cls, row: tuple[Any, ...]) -> Incoming:
        check(row, (str, int, str, str, str, str, NUMBER, int, int, int))
        return cls(row[1], IncomingPart(*row[2:]))


TO_CHILD = Codec({_SUBMIT: Submit.decode, _CANCEL: Cancel.decode, _STORED: Stored.decode, _STOP: Stop.decode})
FROM_CHILD = Codec({_SUBMITTED: Submitted.decode, _FAILED: Failed.decode, _HEALTH: Health.decode,
                    _RECEIPT_HEARD: ReceiptHeard.decode, _INCOMING: Incoming.decode})
