"""The timing rules of the dispatcher and notifier on a fake clock that the test advances: retries run out, a
transport that never gets ready, a callback receiver that never answers 2xx, an SMSC that throttles past what
the rules allow, a claim whose lease runs out. Fake transports and HTTP sessions here; a real SQLite store."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from asterisk_sendsms.app.dispatcher import NOT_READY_DELAY, Dispatcher
from asterisk_sendsms.app.http import Response
from asterisk_sendsms.app.notifier import Notifier
from asterisk_sendsms.app.optout import OptOuts
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.app.transport import TransportHealth, TransportSink
from asterisk_sendsms.app.urlpolicy import UrlPolicy
from asterisk_sendsms.config import CallbackConfig, DispatchConfig, MessagesConfig, OptOutConfig, Route, StoreConfig
from asterisk_sendsms.core.encoding import Coding, EncodedMessage
from asterisk_sendsms.core.errors import ServiceUnavailable, TransientSubmitError
from asterisk_sendsms.core.lifecycle import UNSENT_EXPIRY, State
from asterisk_sendsms.core.model import IncomingPart, MessageView, NewMessage, OutboundMessage, ReceiptResult
from asterisk_sendsms.store import SqliteStore
from asterisk_sendsms.store.sql import SqlStore

START = 1_800_000_000.0


class FakeClock:
    """Time moves only when the test advances it; a sleep resolves once the fake time passes its end."""

    def __init__(self) -> None:
        self.now = START
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - START

    def sleep(self, seconds: float) -> Awaitable[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            future.set_result(None)
        else:
            heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        return future

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


class WatchedStore:
    """The store as the loops under test see it: it counts the calls under way, so that the test advances the
    clock only once the loops have done what the last step allowed; and it can fail to record submits (the
    database is gone) until `recovered`."""

    def __init__(self, store: SqlStore, clock: FakeClock, recording_fails: bool = False) -> None:
        self._store = store
        self._clock = clock
        self.busy = 0
        self.recovered = not recording_fails
        self.refused: list[float] = []  # fake time of each submit not recorded

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def watched(*args: Any, **kwargs: Any) -> Any:
            self.busy += 1
            try:
                return await attribute(*args, **kwargs)
            finally:
                self.busy -= 1
        return watched

    async def mark_submitted(self, sms_id: str, transport: str, smsc_ids: Sequence[str], now: float,
                             receipt_deadline: float | None) -> ReceiptResult:
        if not self.recovered:
            self.refused.append(self._clock.now)
            raise ServiceUnavailable("the database is gone")
        result: ReceiptResult = await self.__getattr__("mark_submitted")(sms_id, transport, smsc_ids, now,
                                                                          receipt_deadline)
        return result

    async def settled(self) -> None:
        """Returns once no call is under way and the loop has gone round idle a few times (what a resolved
        sleep set off has reached the store or is waiting again)."""
        calm = 0
        while calm < 10:
            calm = 0 if self.busy else calm + 1
            await asyncio.sleep(0.001 if self.busy else 0)


async def run_until(clock: FakeClock, store: WatchedStore, condition: Callable[[], Awaitable[bool]],
                    step: float = 0.5, fake_limit: float = 3600.0) -> None:
    """Advance the fake clock `step` at a time, each once the loops are idle, until `condition` holds; fails past
    `fake_limit` fake seconds or 60 real ones."""
    deadline = time.monotonic() + 60
    end = clock.now + fake_limit
    await store.settled()
    while not await condition():
        assert clock.now < end and time.monotonic() < deadline, "condition not met in time"
        clock.advance(step)
        await store.settled()


class FakeTransport:
    """Always ready or never; each submit does what `behaviour` says (returns SMSC ids or raises)."""

    kind = "fake"
    capacity = 10
    expects_receipts = True

    def __init__(self, clock: FakeClock, behaviour: Callable[[OutboundMessage], Awaitable[list[str]]],
                 ready: bool = True) -> None:
        self.name = "fake"
        self.clock = clock
        self._behaviour = behaviour
        self._ready = ready
        self.submits: list[float] = []  # fake time of each submit's start
        self.concurrent = 0
        self.most_concurrent = 0

    async def run(self, sink: TransportSink) -> None:
        await asyncio.Event().wait()

    @property
    def ready(self) -> bool:
        return self._ready

    def health(self) -> TransportHealth:
        return TransportHealth(self.name, self.kind, self._ready, "ready" if self._ready else "connecting")

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        return None

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        self.submits.append(self.clock.now)
        self.concurrent += 1
        self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            return await self._behaviour(message)
        finally:
            self.concurrent -= 1


class FakeSession:
    """An HTTP session whose every post is answered with `status`."""

    def __init__(self, clock: FakeClock, status: int) -> None:
        self.clock = clock
        self.status = status
        self.posts: list[float] = []

    async def post_form(self, url: str, body: bytes) -> int:
        self.posts.append(self.clock.now)
        return self.status

    async def request(self, method: str, url: str, form: bytes | None = None, keep_body: bool = True,
                      max_body: int | None = None) -> Response:
        raise AssertionError("the notifier only posts forms")

    async def close(self) -> None:
        return None


def never_connects(policy: UrlPolicy, timeout: float, *, idle_per_host: int = 0, max_body: int = 0) -> FakeSession:
    raise AssertionError("the dispatcher's notifier is not run here")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqliteStore(StoreConfig(tmp_path / "store.sqlite3"))
    await store.open()
    yield store
    await store.close()


async def accepted(store: SqlStore, clock: FakeClock, validity: float = 48 * 3600.0) -> str:
    sms_id = str(uuid.uuid4())
    await store.accept(NewMessage(sms_id, "alice", None, "+3620", "hi", Coding.GSM7, 1, None, clock.now,
                                  clock.now + validity))
    return sms_id


async def dispatching(store: WatchedStore, transport: FakeTransport, clock: FakeClock, dispatch: DispatchConfig,
                      until: Callable[[], Awaitable[bool]]) -> None:
    """Run a dispatcher on `store` and `transport` until `until` holds."""
    dispatcher = Dispatcher(store, {transport.name: transport}, Router([Route("", (transport.name,))]), dispatch,
                            MessagesConfig(), Notifier(store, CallbackConfig(), never_connects, clock),
                            OptOuts(OptOutConfig(), store), clock=clock)
    running = asyncio.create_task(dispatcher.run())
    try:
        await run_until(clock, store, until)
    finally:
        dispatcher.stop()

        async def stopped() -> bool:  # once the submits in flight, which may pause on the clock, are answered
            return running.done()
        await run_until(clock, store, stopped)
        await running


def in_state(store: SqlStore, sms_id: str, state: State) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        view = await store.get(sms_id)
        return view is not None and view.state is state
    return reached


async def view_of(store: SqlStore, sms_id: str) -> MessageView:
    view = await store.get(sms_id)
    assert view is not None
    return view


async def test_a_message_fails_for_good_after_its_last_retry(store: SqlStore) -> None:
    clock = FakeClock()

    async def link_down(message: OutboundMessage) -> list[str]:
        raise TransientSubmitError("link down")

    transport = FakeTransport(clock, link_down)
    sms_id = await accepted(store, clock)
    dispatch = DispatchConfig(retry_initial=5, retry_max=8, max_attempts=4, lease=60)
    await dispatching(WatchedStore(store, clock), transport, clock, dispatch, in_state(store, sms_id, State.FAILED))
    view = await view_of(store, sms_id)
    assert (view.error_code, view.attempts) == ("RETRIES_EXHAUSTED", 4)
    assert view.error_text == "gave up after 4 attempts: link down"
    assert len(transport.submits) == 4
    # Each retry waited its backoff, doubled from retry_initial up to retry_max.
    gaps = [later - earlier for earlier, later in itertools.pairwise(transport.submits)]
    assert [gap >= backoff for gap, backoff in zip(gaps, (5, 8, 8), strict=True)] == [True] * 3


async def test_a_message_whose_transport_never_gets_ready_expires_unsent(store: SqlStore) -> None:
    clock = FakeClock()

    async def unreachable(message: OutboundMessage) -> list[str]:
        raise AssertionError("a transport that is not ready gets no submit")

    transport = FakeTransport(clock, unreachable, ready=False)
    sms_id = await accepted(store, clock, validity=60)
    waited = []

    async def expired() -> bool:
        view = await view_of(store, sms_id)
        waited.append(view.error_code)
        return view.state is State.EXPIRED

    await dispatching(WatchedStore(store, clock), transport, clock, DispatchConfig(lease=60), expired)
    view = await view_of(store, sms_id)
    assert (view.error_code, view.error_text) == UNSENT_EXPIRY
    assert view.attempts == 0 and not transport.submits
    assert "NO_TRANSPORT_READY" in waited  # it waited for the transport (NOT_READY_DELAY at a time) first
    assert view.updated_at >= START + 60 > START + NOT_READY_DELAY


def throttling(clock: FakeClock, pauses: Sequence[float]) -> Callable[[OutboundMessage], Awaitable[list[str]]]:
    """An SMSC that answers ESME_RTHROTTLED to every try: the transport pauses as it would, then gives up."""

    async def submit(message: OutboundMessage) -> list[str]:
        for pause in pauses:
            await clock.sleep(pause)
        raise TransientSubmitError("the SMSC kept throttling", "ESME_RTHROTTLED")
    return submit


async def test_a_message_throttled_past_its_validity_expires(store: SqlStore) -> None:
    clock = FakeClock()
    # Each submit spends 140 s in throttling pauses: longer than the lease, so its claim must be renewed.
    transport = FakeTransport(clock, throttling(clock, [20.0] * 7))
    sms_id = await accepted(store, clock, validity=200)
    dispatch = DispatchConfig(retry_initial=5, retry_max=5, max_attempts=10, lease=30)
    await dispatching(WatchedStore(store, clock), transport, clock, dispatch, in_state(store, sms_id, State.EXPIRED))
    view = await view_of(store, sms_id)
    assert (view.error_code, view.error_text) == UNSENT_EXPIRY
    assert view.attempts == 2  # the second throttled submit came back past the validity
    assert len(transport.submits) == 2 and transport.most_concurrent == 1  # never claimed twice meanwhile


async def test_a_message_throttled_more_often_than_its_attempts_fails_as_throttled(store: SqlStore) -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, throttling(clock, [1.0, 2.0]))
    sms_id = await accepted(store, clock)
    dispatch = DispatchConfig(retry_initial=5, retry_max=5, max_attempts=3, lease=30)
    await dispatching(WatchedStore(store, clock), transport, clock, dispatch, in_state(store, sms_id, State.FAILED))
    view = await view_of(store, sms_id)
    assert (view.error_code, view.attempts) == ("ESME_RTHROTTLED", 3)
    assert view.error_text == "gave up after 3 attempts: the SMSC kept throttling"


async def test_a_claim_whose_lease_runs_out_is_claimed_again(store: SqlStore) -> None:
    clock = FakeClock()
    failing = WatchedStore(store, clock, recording_fails=True)

    async def accepts(message: OutboundMessage) -> list[str]:
        failing.recovered = len(transport.submits) > 1  # the store is back by the second submit
        return [f"smsc-{len(transport.submits)}"]

    transport = FakeTransport(clock, accepts)
    sms_id = await accepted(store, clock)
    lease = 30.0
    await dispatching(failing, transport, clock, DispatchConfig(lease=lease), in_state(store, sms_id, State.SUBMITTED))
    first, second = transport.submits
    # The outcome was written again while the lease lasted, then left to the lease: the message was claimed
    # again only once the claim had run out, and its second submit was recorded.
    assert len(failing.refused) > 1 and failing.refused[-1] < first + lease
    assert second >= first + lease
    view = await view_of(store, sms_id)
    assert view.history[-1].detail == "via fake, SMSC id smsc-2"


async def job_state(store: SqlStore, job_id: str) -> tuple[str, str]:
    row = await store._run(lambda db: db.execute("SELECT state, last_error FROM callbacks WHERE sms_id = ?",
                                                 (job_id,)).fetchone())
    return row[0], row[1]


async def test_the_notifier_gives_up_after_its_retry_time(store: SqlStore) -> None:
    clock = FakeClock()
    session = FakeSession(clock, 503)

    def open_http(policy: UrlPolicy, timeout: float, *, idle_per_host: int = 0, max_body: int = 0) -> FakeSession:
        return session

    incoming_id = await store.store_incoming(IncomingPart("smsc", "+3620", "+3630", "hi", clock.now),
                                             "http://127.0.0.1:9/in")
    assert incoming_id is not None
    config = CallbackConfig(retry_initial=5, retry_max=40, give_up_after=300)
    watched = WatchedStore(store, clock)
    notifier = Notifier(watched, config, open_http, clock)
    running = asyncio.create_task(notifier.run())

    async def abandoned() -> bool:
        return (await job_state(store, incoming_id))[0] == "abandoned"

    try:
        await run_until(clock, watched, abandoned, step=1)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert await job_state(store, incoming_id) == ("abandoned", "HTTP 503")
    # Retried with backoff while the retry time lasted; the post that failed past it was the last.
    *retried, last = session.posts
    assert retried and all(post - START < 300 for post in retried)
    assert last - START >= 300
    gaps = [later - earlier for earlier, later in itertools.pairwise(session.posts)]
    assert all(gap >= min(40, 5 * 2 ** index) for index, gap in enumerate(gaps))
