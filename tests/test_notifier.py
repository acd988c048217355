"""The notifier against real receivers and a real store: one job's failure (a bug, a refused target) never
ends the loop and is parked after a few tries; a host whose receiver hangs gets at most its share of the
slots, and claim_callbacks hands the rest to other hosts' jobs."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from asterisk_sendsms.app import notifier as notifier_module
from asterisk_sendsms.app.notifier import Notifier
from asterisk_sendsms.config import CallbackConfig, StoreConfig
from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.model import CallbackShares, IncomingPart, NewMessage
from asterisk_sendsms.edge.http.client import HttpClient
from asterisk_sendsms.store import SqliteStore
from asterisk_sendsms.store.sql import SqlStore

from .test_store import Nodes

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqliteStore(StoreConfig(tmp_path / "store.sqlite3"))
    await store.open()
    yield store
    await store.close()


async def incoming(store: SqlStore, url: str, count: int, sender: str = "+3620") -> list[str]:
    ids = []
    for index in range(count):
        sms_id = await store.store_incoming(IncomingPart("smsc", sender, "+3630", f"text {index}", time.time()), url)
        assert sms_id is not None
        ids.append(sms_id)
    return ids


class Receiver:
    def __init__(self, host: str, hang: bool = False) -> None:
        self.host = host
        self.hang = hang
        self.posts: list[dict[str, str]] = []
        self.started = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Receiver:
        async def handle(request: web.Request) -> web.Response:
            self.started += 1
            if self.hang:
                await asyncio.sleep(3600)
            self.posts.append(dict(await request.post()))  # type: ignore[arg-type]
            return web.Response(text="ok")
        app = web.Application()
        app.router.add_post("/dlr", handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.url = f"http://{self.host}:{site._server.sockets[0].getsockname()[1]}/dlr"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def job_states(store: SqlStore) -> dict[str, tuple[str, str]]:
    rows = await store._run(lambda db: db.execute("SELECT sms_id, state, last_error FROM callbacks").fetchall())
    return {sms_id: (state, error) for sms_id, state, error in rows}


async def until_states(store: SqlStore, condition: Callable[[dict[str, tuple[str, str]]], bool],
                       timeout: float = 20.0) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while not condition(states := await job_states(store)):
        assert time.monotonic() < deadline, f"notification states: {states}"
        await asyncio.sleep(0.05)
    return states


async def running(notifier: Notifier) -> tuple[asyncio.Task[None], Callable[[], Awaitable[None]]]:
    task = asyncio.create_task(notifier.run())

    async def stop() -> None:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return task, stop


async def test_a_hanging_host_does_not_hold_back_another_hosts_notifications(store: SqlStore) -> None:
    config = CallbackConfig(allowed_networks=LOOPBACK, timeout=600, concurrency=8, per_host=3)
    async with Receiver("127.0.0.2", hang=True) as hanging, Receiver("127.0.0.1") as fine:
        await incoming(store, hanging.url, 60)  # due first
        well_behaved = await incoming(store, fine.url, 20, sender="+3621")
        task, stop = await running(Notifier(store, config, HttpClient))
        try:
            await until(lambda: len(fine.posts) == 20)
            # The hanging receiver holds its share and no more, and the posts to it have not timed out: the
            # other host's notifications did not wait for them.
            assert hanging.started == 3 and not hanging.posts and not task.done()
            await until_states(store, lambda states: all(states[i][0] == "done" for i in well_behaved))
        finally:
            await stop()
    assert {post["Sender"] for post in fine.posts} == {"+3621"}


async def test_a_finished_post_starts_the_next_claimed_job_without_waiting_for_a_claim(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim waits for the store's writer, behind its other work; the jobs claimed ahead (twice the shares)
    keep the posts going meanwhile."""
    config = CallbackConfig(allowed_networks=LOOPBACK, concurrency=4, per_host=2, per_user=2)
    real_claim = store.claim_callbacks
    claims: list[int] = []
    store_is_slow = asyncio.Event()

    async def slow_after_the_first(limit, now, lease, shares=None):  # type: ignore[no-untyped-def]
        claims.append(limit)
        if len(claims) > 1:
            await store_is_slow.wait()
        return await real_claim(limit, now, lease, shares)
    monkeypatch.setattr(store, "claim_callbacks", slow_after_the_first)
    async with Receiver("127.0.0.1") as receiver:
        await incoming(store, receiver.url, 10)
        _, stop = await running(Notifier(store, config, HttpClient))
        try:
            # Two posted at once (the host's share), two more claimed ready: all four go out while the next
            # claim waits for the store.
            await until(lambda: len(receiver.posts) == 4)
            assert len(claims) == 2 and receiver.started == 4
            store_is_slow.set()
            await until(lambda: len(receiver.posts) == 10)
        finally:
            await stop()


async def test_a_failing_job_is_parked_and_the_others_go_on(store: SqlStore, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    config = CallbackConfig(allowed_networks=LOOPBACK, retry_initial=0.05, retry_max=0.1, max_failures=3)
    real_form = notifier_module.incoming_form
    calls: list[str] = []

    def broken_form(message):  # type: ignore[no-untyped-def]
        if message.sender == "+3699":
            calls.append(message.sms_id)
            raise ValueError(f"a bug that quotes the text: {message.text}")
        return real_form(message)
    monkeypatch.setattr(notifier_module, "incoming_form", broken_form)
    async with Receiver("127.0.0.1") as fine:
        [bad] = await incoming(store, fine.url, 1, sender="+3699")
        good = await incoming(store, fine.url, 3)
        task, stop = await running(Notifier(store, config, HttpClient))
        try:
            await until(lambda: len(fine.posts) == 3)
            states = await until_states(store, lambda states: states[bad][0] == "abandoned"
                                        and all(states[g][0] == "done" for g in good))
            assert states[bad][1] == "internal error (ValueError) while notifying 127.0.0.1"
            assert not task.done()
        finally:
            await stop()
    assert len(calls) == 3  # parked: not tried again
    # Logged once with where it happened, never with the exception's text (it may quote a message's).
    assert caplog.text.count("failed by an internal error ValueError") == 1
    assert "broken_form" in caplog.text and "text 0" not in caplog.text
    assert caplog.text.count("parked as failed after 3 internal errors") == 1


async def test_a_name_that_leads_inside_is_refused_and_parked(store: SqlStore) -> None:
    config = CallbackConfig(retry_initial=0.05)  # nothing allow-listed
    async with Receiver("127.0.0.1") as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]
        [job] = await incoming(store, f"http://localhost:{port}/dlr", 1)
        task, stop = await running(Notifier(store, config, HttpClient))
        try:
            states = await until_states(store, lambda states: states[job][0] == "abandoned")
            assert states[job][1] == "refused: localhost names this host, which is not allowed"
            assert receiver.started == 0 and not task.done()
        finally:
            await stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    nodes = Nodes(request.param, tmp_path, request)
    yield await nodes.open()
    for opened in nodes.opened:
        await opened.close()


async def test_claims_cap_each_hosts_share(any_store: SqlStore) -> None:
    store = any_store
    now = time.time()
    await incoming(store, "http://slow.example/dlr", 100)
    await incoming(store, "http://Fast.Example:8080/dlr", 3)

    def shares(hosts: dict[str, int], look_past_full: bool = True) -> CallbackShares:
        return CallbackShares(per_host=4, per_user=8, hosts=hosts, users={}, look_past_full=look_past_full)
    # Not looking past a full host: the first window (4 times the limit, all the slow host's) and no further.
    assert [j.url for j in await store.claim_callbacks(8, now + 10, 30, shares({}, look_past_full=False))] == [
        "http://slow.example/dlr"] * 4
    await store._run(lambda db: db.execute("UPDATE callbacks SET due_at = ?, attempts = 0", (now,)))
    first = await store.claim_callbacks(8, now + 10, 30, shares({}))
    # The first window held only the slow host's rows; once it was full the claim looked again without it.
    assert sorted(j.url for j in first) == ["http://Fast.Example:8080/dlr"] * 3 + ["http://slow.example/dlr"] * 4
    assert await store.claim_callbacks(8, now + 10, 30, shares({"slow.example": 4, "fast.example": 3})) == []
    third = await store.claim_callbacks(8, now + 10, 30, shares({"slow.example": 2}))
    assert [j.url for j in third] == ["http://slow.example/dlr"] * 2
    # Without shares, the claim is as before: the due order.
    assert len(await store.claim_callbacks(8, now + 10, 30)) == 8


async def test_claims_cap_each_users_share(any_store: SqlStore) -> None:
    store = any_store
    now = time.time()
    for user, count in (("mallory", 30), ("alice", 3)):
        for index in range(count):
            message = NewMessage(str(uuid.uuid4()), user, None, "+3620", "hi", Coding.GSM7, 1,
                                 f"http://h{index}.{user}.example/dlr", now, now + 3600)
            await store.accept(message)
            await store._run(lambda db, m=message: db.execute(
                "INSERT INTO callbacks (sms_id, url, state, due_at, created_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?)", (m.sms_id, m.callback_url, now, now, now)))
    jobs = await store.claim_callbacks(8, now + 10, 30, CallbackShares(4, 3, {}, {}))
    # Thirty hosts of one user's get that user's share, and the other user's jobs get theirs.
    assert sorted(j.user for j in jobs) == ["alice"] * 3 + ["mallory"] * 3
    more = await store.claim_callbacks(8, now + 10, 30, CallbackShares(4, 3, {}, {"mallory": 3, "alice": 3}))
    assert more == []


async def test_a_failing_claim_is_logged_once_and_the_loop_goes_on(store: SqlStore, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "asterisk_sendsms.app.notifier")
    real_claim = store.claim_callbacks
    failures = [3]

    async def flaky_claim(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failures[0]:
            failures[0] -= 1
            raise KeyError("a bug in reading the outbox")
        return await real_claim(*args, **kwargs)
    monkeypatch.setattr(store, "claim_callbacks", flaky_claim)
    monkeypatch.setattr(notifier_module, "_LOOP_PAUSE", 0.05)
    async with Receiver("127.0.0.1") as fine:
        await incoming(store, fine.url, 2)
        task, stop = await running(Notifier(store, CallbackConfig(allowed_networks=LOOPBACK), HttpClient))
        try:
            await until(lambda: len(fine.posts) == 2)
            assert not task.done()
        finally:
            await stop()
    assert caplog.text.count("cannot read pending notifications (KeyError)") == 1
    assert "pending notifications can be read again" in caplog.text
