"""The message lifecycle as an explicit transition table; every state change in every store goes through it.

    scheduled ──► accepted ──► queued ──► submitted ──► delivered | undelivered | expired | rejected |
        │            │           │ ▲          │ ▲           acknowledged | sent
        │            │           └─┘ retry    └─┘ intermediate receipt (ENROUTE, intermediate notification)
        │            └───────────┴──► failed | expired | rejected
        └────────────┴───────────┴──► cancelled (queued only while no dispatcher holds it)
"""

from __future__ import annotations

from enum import StrEnum

from asterisk_sendsms.core.errors import IllegalTransition

__all__ = ["FAILURE_STATES", "FINAL_STATES", "SETTLED_STATES", "SOURCES", "UNSENT_EXPIRY", "State",
           "check_transition", "is_final"]


class State(StrEnum):
    # Committed, held until its time: the sender's SendAt, or its user's max_rate lets it go
    SCHEDULED = "scheduled"
    ACCEPTED = "accepted"  # committed, waiting for the dispatcher
    QUEUED = "queued"  # claimed by a dispatcher for a transport, or waiting for a retry
    SUBMITTED = "submitted"  # the transport took it (SMSC ids known), waiting for receipts
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    # SMPP's ACCEPTD (message_state 6), a final state: the SMSC settled the message on the subscriber's behalf
    # (e.g. customer service read it); no delivery to the handset is confirmed, none is denied.
    ACKNOWLEDGED = "acknowledged"
    SENT = "sent"  # submitted over a route that gives no delivery receipts: nothing more will be known
    FAILED = "failed"  # the gateway gave up: permanent error or retries exhausted
    CANCELLED = "cancelled"  # its sender withdrew it before it was submitted


FINAL_STATES = frozenset({State.DELIVERED, State.UNDELIVERED, State.EXPIRED, State.REJECTED, State.ACKNOWLEDGED,
                          State.SENT, State.FAILED, State.CANCELLED})
# Error code and text of a message whose validity ended before it could be submitted (state `expired`)
UNSENT_EXPIRY = ("EXPIRED", "validity period ended before the message could be submitted")
# Final states in which nothing went wrong: their messages have no failure reason to rank.
SETTLED_STATES = frozenset({State.DELIVERED, State.ACKNOWLEDGED, State.SENT})
# Final states in which a message failed to reach its recipient: the status page and metrics rank their reasons
# (a message its sender cancelled did not fail).
FAILURE_STATES = FINAL_STATES - SETTLED_STATES - {State.CANCELLED}

TRANSITIONS: dict[State, frozenset[State]] = {
    State.SCHEDULED: frozenset({State.ACCEPTED, State.CANCELLED}),
    State.ACCEPTED: frozenset({State.QUEUED, State.FAILED, State.EXPIRED, State.REJECTED, State.CANCELLED}),
    State.QUEUED: frozenset({State.QUEUED, State.SUBMITTED, State.FAILED, State.EXPIRED, State.REJECTED,
                             State.CANCELLED}),
    State.SUBMITTED: frozenset({State.SUBMITTED, State.DELIVERED, State.UNDELIVERED, State.EXPIRED,
                                State.REJECTED, State.ACKNOWLEDGED, State.SENT}),
    **{final: frozenset() for final in FINAL_STATES},
}


# For each state, the states it may be entered from: what a store's conditional UPDATE matches on.
SOURCES: dict[State, tuple[State, ...]] = {
    target: tuple(s for s in State if target in TRANSITIONS[s]) for target in State
}


def is_final(state: State) -> bool:
    return state in FINAL_STATES


def check_transition(sms_id: str, current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(sms_id, current, target)
