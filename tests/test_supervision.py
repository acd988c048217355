"""The one failure rule: a loop that fails is started again and the daemon goes on; a message the dispatcher
fails on again and again is parked as failed, with the reason."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from asterisk_sendsms.app.dispatcher import UNEXPECTED_FAILURES, Dispatcher
from asterisk_sendsms.app.notifier import Notifier
from asterisk_sendsms.app.optout import OptOuts
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.config import CallbackConfig, DispatchConfig, MessagesConfig, OptOutConfig, Route, StoreConfig
from asterisk_sendsms.core.encoding import Coding, EncodedMessage
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import NewMessage, OutboundMessage
from asterisk_sendsms.edge.http.client import HttpClient
from asterisk_sendsms.runtime import supervision
from asterisk_sendsms.runtime.transports import TransportHealth, TransportSink
from asterisk_sendsms.store import SqliteStore


async def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_failing_loop_is_started_again_until_stopped(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(supervision, "RESTART_PAUSE", 0.01)
    runs = 0

    async def run_once() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ValueError("readexactly size can not be less than zero")

    with caplog.at_level(logging.ERROR):
        await supervision.keep_running(run_once, "notifier", stopping=lambda: runs >= 3)
    assert runs == 3
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2 and all(r.getMessage() == "notifier failed" for r in tracebacks)
    assert sum("starting it again" in r.getMessage() for r in caplog.records) == 2


class _BuggyTransport:
    """Every submit hits a bug (not a transport error the dispatcher knows)."""

    name = "buggy"
    kind = "test"
    capacity = 10
    expects_receipts = True

    def __init__(self) -> None:
        self.submits = 0

    async def run(self, sink: TransportSink) -> None:
        await asyncio.Event().wait()

    @property
    def ready(self) -> bool:
        return True

    def health(self) -> TransportHealth:
        return TransportHealth(self.name, self.kind, True, "ready")

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        return None

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        self.submits += 1
        raise RuntimeError("a bug in the transport")


async def test_a_message_that_keeps_failing_unexpectedly_is_parked_as_failed(tmp_path: Path) -> None:
    store = SqliteStore(StoreConfig(tmp_path / "store.sqlite3"))
    await store.open()
    try:
        sms_id = str(uuid.uuid4())
        await store.accept(NewMessage(sms_id, "alice", None, "+3620", "hi", Coding.GSM7, 1, None, time.time(),
                                      time.time() + 3600))
        transport = _BuggyTransport()
        dispatcher = Dispatcher(store, {"buggy": transport}, Router([Route("", ("buggy",))]),
                                DispatchConfig(lease=0.1, poll_interval=0.02), MessagesConfig(),
                                Notifier(store, CallbackConfig(), HttpClient), OptOuts(OptOutConfig(), store))
        running = asyncio.create_task(dispatcher.run())

        async def parked() -> bool:
            view = await store.get(sms_id)
            return view is not None and view.state is State.FAILED

        await wait_for(parked)
        view = await store.get(sms_id)
        assert view is not None
        assert view.error_code == "INTERNAL_ERROR" and "RuntimeError" in view.error_text
        assert transport.submits == UNEXPECTED_FAILURES
        assert not running.done()  # the dispatcher goes on
        dispatcher.stop()
        await asyncio.wait_for(running, 5)
    finally:
        await store.close()
