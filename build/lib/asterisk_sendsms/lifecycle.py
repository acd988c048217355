"""The message lifecycle as an explicit transition table; every state change in every store goes through it.

    accepted ──► queued ──► submitted ──► delivered | undelivered | expired | rejected
       │           │ ▲          │ ▲
       │           └─┘ retry    └─┘ intermediate receipt (ENROUTE, ACCEPTD)
       └───────────┴──► failed | expired | rejected
"""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition

__all__ = ["FINAL_STATES", "SOURCES", "State", "check_transition", "is_final"]


class State(StrEnum):
    ACCEPTED = "accepted"  # committed, waiting for the dispatcher
    QUEUED = "queued"  # claimed by a dispatcher for a transport, or waiting for a retry
    SUBMITTED = "submitted"  # the transport took it (SMSC ids known), waiting for receipts
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"  # the gateway gave up: permanent error or retries exhausted


FINAL_STATES = frozenset({State.DELIVERED, State.UNDELIVERED, State.EXPIRED, State.REJECTED, State.FAILED})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.ACCEPTED: frozenset({State.QUEUED, State.FAILED, State.EXPIRED, State.REJECTED}),
    State.QUEUED: frozenset({State.QUEUED, State.SUBMITTED, State.FAILED, State.EXPIRED, State.REJECTED}),
    State.SUBMITTED: frozenset({State.SUBMITTED, State.DELIVERED, State.UNDELIVERED, State.EXPIRED,
                                State.REJECTED}),
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
