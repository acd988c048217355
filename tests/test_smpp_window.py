"""The SMPP window and pacer cores: slots pass in order, a freed slot goes to the first waiting submit, a
waiting submit can withdraw; the pacer spaces sends by the rate and holds them through a throttling pause."""

from __future__ import annotations

import pytest

from asterisk_sendsms.wire.smpp.window import THROTTLE_PAUSE_INITIAL, THROTTLE_PAUSE_MAX, Pacer, SubmitWindow


def test_slots_are_handed_to_the_waiting_in_order() -> None:
    window: SubmitWindow[str] = SubmitWindow(2)
    assert window.enter("a") and window.enter("b")
    assert not window.enter("c") and not window.enter("d")
    assert (window.in_use, window.waiting) == (2, 2)
    assert window.leave() == "c"  # a's slot, straight to c
    assert window.leave() == "d"
    assert (window.in_use, window.waiting) == (2, 0)
    assert window.leave() is None and window.leave() is None
    assert window.in_use == 0


def test_the_waiting_go_by_class_then_by_turn_then_in_order() -> None:
    window: SubmitWindow[str] = SubmitWindow(1)
    assert window.enter("holder", (2, 1))
    for item, order in (("bulk-a5", (2, 5)), ("bulk-a6", (2, 6)), ("normal", (1, 0)), ("bulk-b5", (2, 5)),
                        ("caller", (0, 0)), ("gone", (0, 0))):
        assert not window.enter(item, order)
    window.withdraw("gone")
    assert [window.leave() for _ in range(5)] == ["caller", "normal", "bulk-a5", "bulk-b5", "bulk-a6"]
    assert window.leave() is None and window.in_use == 0


def test_nobody_jumps_the_queue_while_others_wait() -> None:
    window: SubmitWindow[str] = SubmitWindow(1)
    assert window.enter("a")
    assert not window.enter("b")
    assert window.leave() == "b"
    assert not window.enter("c")  # b holds the one slot
    window.withdraw("c")
    assert window.leave() is None and window.in_use == 0
    assert window.enter("d")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_spaces_sends() -> None:
    clock = _Clock()
    pacer = Pacer(4.0, clock)
    assert [pacer.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    clock.now += 1.0  # idle for a while: no burst is owed
    assert pacer.reserve() == 0.0


def test_a_throttling_pause_doubles_until_a_submit_goes_through() -> None:
    clock = _Clock()
    pacer = Pacer(0.0, clock)
    assert pacer.reserve() == 0.0
    assert pacer.slow_down() == THROTTLE_PAUSE_INITIAL
    assert pacer.throttled
    assert pacer.reserve() == pytest.approx(THROTTLE_PAUSE_INITIAL)
    clock.now += THROTTLE_PAUSE_INITIAL
    assert not pacer.throttled and pacer.reserve() == 0.0
    pauses = [pacer.slow_down() for _ in range(10)]
    assert pauses[:3] == [2 * THROTTLE_PAUSE_INITIAL, 4 * THROTTLE_PAUSE_INITIAL, 8 * THROTTLE_PAUSE_INITIAL]
    assert max(pauses) == THROTTLE_PAUSE_MAX
    pacer.recovered()
    assert pacer.slow_down() == THROTTLE_PAUSE_INITIAL
