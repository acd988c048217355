"""A modem submit's turn: one holder of the priority gate at a time; those waiting get in by class, then fair
rank, then arrival (the SMPP window's order); a waiter that gives up leaves neither the gate held nor a place in
line. When its turn comes, a message with a ValidityPeriod gets what is left of it, or expires unsent."""

from __future__ import annotations

import asyncio
import time

import pytest

from asterisk_sendsms.core.errors import TransientSubmitError
from asterisk_sendsms.core.model import OutboundMessage
from asterisk_sendsms.core.traffic import Order, Priority
from asterisk_sendsms.edge.modem.gate import FIRST, PriorityGate
from asterisk_sendsms.edge.modem.transport import _validity_left

INTERACTIVE: Order = (Priority.INTERACTIVE.rank, 0)
BULK: Order = (Priority.BULK.rank, 0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def queue(gate: PriorityGate, served: list[str], name: str, order: Order) -> None:
    async with gate.turn(order):
        served.append(name)
        await settle()


async def test_an_interactive_submit_behind_bulk_ones_goes_next() -> None:
    gate = PriorityGate()
    served: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.turn(BULK):
            served.append("holder")
            await release.wait()

    tasks = [asyncio.create_task(holder())]
    await settle()
    for n in range(3):
        tasks.append(asyncio.create_task(queue(gate, served, f"bulk{n}", (Priority.BULK.rank, n))))
        await settle()
    tasks.append(asyncio.create_task(queue(gate, served, "normal", (Priority.NORMAL.rank, 0))))
    await settle()
    tasks.append(asyncio.create_task(queue(gate, served, "interactive", INTERACTIVE)))
    await settle()
    tasks.append(asyncio.create_task(queue(gate, served, "own command", FIRST)))
    await settle()
    assert gate.waiting == 6
    release.set()
    await asyncio.gather(*tasks)
    assert served == ["holder", "own command", "interactive", "normal", "bulk0", "bulk1", "bulk2"]
    assert gate.waiting == 0


async def test_bulk_goes_by_fair_rank_then_arrival() -> None:
    gate = PriorityGate()
    served: list[str] = []
    async with gate.turn():
        tasks = [asyncio.create_task(queue(gate, served, name, (Priority.BULK.rank, rank)))
                 for name, rank in (("bob1", 1), ("alice1", 0), ("bob2", 1), ("alice2", 0))]
        await settle()
    await asyncio.gather(*tasks)
    assert served == ["alice1", "alice2", "bob1", "bob2"]


async def test_a_cancelled_waiter_leaves_the_line_and_the_gate_free() -> None:
    gate = PriorityGate()
    served: list[str] = []
    async with gate.turn(BULK):
        gone = asyncio.create_task(queue(gate, served, "gone", INTERACTIVE))
        await settle()
        gone.cancel()
        await settle()
        assert gone.cancelled() and gate.waiting == 0
    await asyncio.wait_for(queue(gate, served, "next", BULK), 1)  # the gate is free: no wait
    assert served == ["next"]


async def test_a_waiter_cancelled_as_the_gate_is_handed_to_it_passes_it_on() -> None:
    gate = PriorityGate()
    served: list[str] = []
    async with gate.turn(BULK):
        first = asyncio.create_task(queue(gate, served, "first", INTERACTIVE))
        second = asyncio.create_task(queue(gate, served, "second", BULK))
        await settle()
    first.cancel()  # the gate was handed to it when the holder left, before it could run
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled() and served == ["second"]
    await asyncio.wait_for(queue(gate, served, "after", BULK), 1)
    assert served == ["second", "after"]


async def test_a_waiter_cancelled_before_the_holder_leaves_in_the_same_turn_is_skipped() -> None:
    gate = PriorityGate()
    served: list[str] = []
    holder = gate.turn(BULK)
    await holder.__aenter__()
    gone = asyncio.create_task(queue(gate, served, "gone", INTERACTIVE))
    waiting = asyncio.create_task(queue(gate, served, "waiting", BULK))
    await settle()
    gone.cancel()  # its turn is cancelled, but it has not run to take itself out of the line...
    await holder.__aexit__(None, None, None)  # ...when the holder leaves
    await asyncio.gather(gone, waiting, return_exceptions=True)
    assert served == ["waiting"] and gate.waiting == 0
    await asyncio.wait_for(queue(gate, served, "after", BULK), 1)


def message(expires_in: float, smsc_validity: bool) -> OutboundMessage:
    return OutboundMessage("S1", None, "+36201234567", "code", 0, time.time() + expires_in,
                           Priority.INTERACTIVE, 0, smsc_validity)


def test_the_validity_left_when_the_turn_comes() -> None:
    assert _validity_left(message(3600, smsc_validity=False)) is None  # no ValidityPeriod: no TP-VP
    assert _validity_left(message(-5, smsc_validity=False)) is None  # the dispatcher's expiry is for it
    left = _validity_left(message(600, smsc_validity=True))
    assert left is not None and 599 < left <= 600
    with pytest.raises(TransientSubmitError) as refused:
        _validity_left(message(-0.001, smsc_validity=True))
    assert refused.value.code == "EXPIRED"
