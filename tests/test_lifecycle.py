"""Unit tests of the message lifecycle table."""

from __future__ import annotations

import itertools

import pytest

from asterisk_sendsms.core.errors import IllegalTransition
from asterisk_sendsms.core.lifecycle import FINAL_STATES, TRANSITIONS, State, check_transition


def test_the_happy_path_is_allowed() -> None:
    path = [State.ACCEPTED, State.QUEUED, State.SUBMITTED, State.DELIVERED]
    for current, target in itertools.pairwise(path):
        check_transition("id", current, target)


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_final_states_have_no_exit(final: State) -> None:
    for target in State:
        with pytest.raises(IllegalTransition, match=f"{final} -> {target}"):
            check_transition("id", final, target)


@pytest.mark.parametrize(("current", "target"), [
    (State.ACCEPTED, State.SUBMITTED),  # never submitted without being claimed
    (State.ACCEPTED, State.DELIVERED),
    (State.SUBMITTED, State.QUEUED),  # a submitted message is never sent again
    (State.SUBMITTED, State.FAILED),
    (State.QUEUED, State.DELIVERED),
])
def test_illegal_transitions_raise(current: State, target: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition("id", current, target)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)
