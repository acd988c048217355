"""The value types that cross module boundaries: a message to accept, a message to dispatch, a receipt,
a callback job, and the read-only view of a message's history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Order, Priority

__all__ = [
    "CallbackJob",
    "CallbackShares",
    "CallbackState",
    "HistoryEntry",
    "IncomingPart",
    "IncomingView",
    "MessageView",
    "NewMessage",
    "OptOut",
    "OutboundMessage",
    "PartOutcome",
    "PartView",
    "PendingCallback",
    "Receipt",
    "ReceiptResult",
]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated message, ready to be committed."""

    sms_id: str
    username: str
    sender: str | None
    recipient: str
    text: str
    coding: Coding
    part_count: int
    callback_url: str | None
    created_at: float
    expires_at: float  # not submitted by then: expired
    priority: Priority = DEFAULT_PRIORITY
    # Asked for by the sender (ValidityPeriod): then expires_at is also when the SMSC must give up.
    validity_period: float | None = None
    send_at: float | None = None  # held until then (SendAt); None: it may leave now


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A claimed message as the dispatcher hands it to a transport."""

    sms_id: str
    sender: str | None
    recipient: str
    text: str
    previous_attempts: int  # submissions tried before this one
    expires_at: float
    # A transport's waiting submits go out by class, and bulk by its users' turns (the store's order)
    priority: Priority = DEFAULT_PRIORITY
    fair_rank: int = 0
    smsc_validity: bool = False  # the SMSC gets what is left of expires_at as validity_period

    @property
    def order(self) -> Order:
        return self.priority.rank, self.fair_rank


class PartOutcome(StrEnum):
    """What a receipt says about one part: SMPP 3.4's message states (Appendix B, `message_state` 5.2.28), to
    which GSM status reports map too. Only ENROUTE is intermediate; every other state is final."""

    DELIVERED = "delivered"  # DELIVRD
    EXPIRED = "expired"  # EXPIRED
    DELETED = "deleted"  # DELETED
    UNDELIVERED = "undelivered"  # UNDELIV
    ACCEPTED = "accepted"  # ACCEPTD: settled on the subscriber's behalf
    UNKNOWN = "unknown"  # UNKNOWN: the SMSC lost track of it
    REJECTED = "rejected"  # REJECTD
    ENROUTE = "enroute"  # ENROUTE, and every intermediate notification

    @property
    def final(self) -> bool:
        return self is not PartOutcome.ENROUTE

    @property
    def settled(self) -> bool:
        """Final without a failure: the message waits for its other parts."""
        return self in (PartOutcome.DELIVERED, PartOutcome.ACCEPTED)

    @property
    def message_state(self) -> State:
        """The state of a message this outcome of one of its parts finishes (all parts, if settled)."""
        return _MESSAGE_STATES[self]


_MESSAGE_STATES = {
    PartOutcome.DELIVERED: State.DELIVERED, PartOutcome.EXPIRED: State.EXPIRED,
    PartOutcome.DELETED: State.UNDELIVERED, PartOutcome.UNDELIVERED: State.UNDELIVERED,
    PartOutcome.ACCEPTED: State.ACKNOWLEDGED, PartOutcome.UNKNOWN: State.UNDELIVERED,
    PartOutcome.REJECTED: State.REJECTED, PartOutcome.ENROUTE: State.SUBMITTED,
}


@dataclass(frozen=True, slots=True)
class Receipt:
    transport: str
    smsc_id: str  # already normalised by the transport
    outcome: PartOutcome
    error_code: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """What applying a receipt did: matched a part (and maybe finished its message), or was kept for later."""

    sms_id: str | None
    final_state: State | None = None
    submitted_at: float | None = None  # with a final state: when the message was submitted (receipt latency)

    @property
    def matched(self) -> bool:
        return self.sms_id is not None


@dataclass(frozen=True, slots=True)
class CallbackShares:
    """How many notifications each host (`urlpolicy.url_host`) and each user (the message's owner; incoming
    SMS have none) may have in flight, and how many they have: a claim gives none to one that is full."""

    per_host: int
    per_user: int
    hosts: Mapping[str, int]
    users: Mapping[str, int]
    # Whether to look past the due rows of full hosts and users (its cost grows with their backlog); else only
    # the first window of due rows is looked at.
    look_past_full: bool = True


class CallbackState(StrEnum):
    """A notification's state in the outbox (the message's own lifecycle is core/lifecycle.py's)."""

    PENDING = "pending"  # to be delivered, now or after a back-off
    DONE = "done"  # the receiver answered 2xx
    ABANDONED = "abandoned"  # given up: retries or time ran out, or the URL may no longer be called


@dataclass(frozen=True, slots=True)
class CallbackJob:
    job_id: int
    sms_id: str  # the message's SmsId, or the incoming message's id
    url: str
    attempts: int  # including this one
    created_at: float
    kind: str = "delivery"  # "delivery" (SMSDeliveryReport) or "incoming" (IncomingSMS)
    # What the notification reports, read with the claim (None if it was no longer in the store)
    subject: MessageView | IncomingView | None = None

    @property
    def user(self) -> str:
        """Whose notification this is, for fairness between users ("" for incoming SMS)."""
        return self.subject.username if isinstance(self.subject, MessageView) else ""


@dataclass(frozen=True, slots=True)
class PendingCallback:
    """A notification still to be delivered, as the operator sees it."""

    sms_id: str
    url: str
    attempts: int
    last_error: str
    due_at: float  # its next try


@dataclass(frozen=True, slots=True)
class IncomingPart:
    """One received (MO) SMS or one part of a concatenated one, decoded by its transport."""

    transport: str
    sender: str
    recipient: str
    text: str
    received_at: float
    reference: int = 0  # concatenation reference; parts of one message share it
    total: int = 1
    sequence: int = 1


@dataclass(frozen=True, slots=True)
class IncomingView:
    sms_id: str
    transport: str
    sender: str
    recipient: str
    text: str
    received_at: float


@dataclass(frozen=True, slots=True)
class PartView:
    index: int
    smsc_id: str | None
    state: str
    error_code: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: float
    state: State
    detail: str


@dataclass(frozen=True, slots=True)
class MessageView:
    sms_id: str
    username: str
    sender: str | None
    recipient: str
    text: str
    coding: Coding
    part_count: int
    state: State
    transport: str | None
    attempts: int
    error_code: str
    error_text: str
    callback_url: str | None
    callback_state: str | None
    created_at: float
    updated_at: float
    priority: Priority = DEFAULT_PRIORITY
    send_at: float | None = None  # the SendAt its sender asked for
    parts: tuple[PartView, ...] = field(default=())
    history: tuple[HistoryEntry, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class OptOut:
    """A number that asked for no more messages: from `scope` (a sender number or name), or from anyone ('')."""

    number: str
    scope: str
    created_at: float
    source: str  # keyword (an incoming STOP), cli, api
