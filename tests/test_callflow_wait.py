"""A call waiting for its SMS (`wait=submitted`) inside the daemon is woken by the message's events, not by its
poll: the poll is made an hour long here, and the wait still ends as soon as the dispatcher reports the submit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from asterisk_sendsms.app import callflow
from asterisk_sendsms.app.events import EventHub
from asterisk_sendsms.app.service import ServiceBackend
from asterisk_sendsms.config import UserConfig
from asterisk_sendsms.core.lifecycle import State


class Service:
    """What ServiceBackend reads: the message's state (as the store has it) and the events."""

    def __init__(self) -> None:
        self.events = EventHub()
        self.state = State.QUEUED
        self.reads = 0

    async def status(self, user: UserConfig, sms_id: str, detail: bool = True) -> SimpleNamespace:
        self.reads += 1
        return SimpleNamespace(state=self.state, error_code="", error_text="")


async def test_a_call_waiting_for_the_submit_is_woken_by_its_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callflow, "POLL_INTERVAL", 3600.0)
    service = Service()
    backend = ServiceBackend(service, UserConfig("ivr"))  # type: ignore[arg-type]
    options = callflow.SmsCallOptions(wait=callflow.WaitFor.SUBMITTED, timeout=7200)
    waiting = asyncio.create_task(callflow._wait(backend, "sms-1", options))
    while service.reads == 0:
        await asyncio.sleep(0.01)
    service.events.publish("retry", "sms-2")  # another message's event wakes nobody here
    await asyncio.sleep(0.05)
    assert service.reads == 1 and not waiting.done()
    service.state = State.SUBMITTED
    service.events.publish("submitted", "sms-1")
    assert await asyncio.wait_for(waiting, 30) == (State.SUBMITTED, "")
    assert service.reads == 2
    assert not service.events._watchers  # the watch ends with the wait


async def test_a_change_between_the_read_and_the_wait_is_not_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callflow, "POLL_INTERVAL", 3600.0)
    service = Service()

    async def read_then_submitted(user: UserConfig, sms_id: str, detail: bool = True) -> SimpleNamespace:
        seen = SimpleNamespace(state=service.state, error_code="", error_text="")
        if service.state is State.QUEUED:  # the submit is reported right after this read, before the wait
            service.state = State.SUBMITTED
            service.events.publish("submitted", sms_id)
        return seen
    service.status = read_then_submitted  # type: ignore[method-assign]
    backend = ServiceBackend(service, UserConfig("ivr"))  # type: ignore[arg-type]
    options = callflow.SmsCallOptions(wait=callflow.WaitFor.SUBMITTED, timeout=7200)
    assert await asyncio.wait_for(callflow._wait(backend, "sms-1", options), 30) == (State.SUBMITTED, "")
