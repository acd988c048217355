"""Both stores, on a real SQLite file and a real PostgreSQL server, pass the same tests: lifecycle through the
table, receipts (early, repeated, multi-part), the callback outbox, claims after a crash, group commit under
concurrency, failures that write nothing, schema versions. Then what only several nodes on one PostgreSQL
database can do: share a queue without double claims, take over a dead node's lease, correlate receipts that
race their submits on other nodes, and survive the database going away."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asterisk_sendsms.app.limits import Limits, UserLimits
from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.errors import (
    IllegalTransition,
    MessageNotFound,
    NotCancellable,
    QuotaExceeded,
    ServiceUnavailable,
)
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.model import MessageView, NewMessage, OptOut, PartOutcome, Receipt, ReceiptResult
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.store import SqliteStore, Store, batched, make_store
from asterisk_sendsms.store.db import Db
from asterisk_sendsms.store.sql import SqlStore

NOW = 1_800_000_000.0


def new_message(parts: int = 1, callback: str | None = "http://127.0.0.1/dlr", expires: float = NOW + 3600,
                created: float = NOW) -> NewMessage:
    return NewMessage(str(uuid.uuid4()), "alice", "+3630", "+3620", "hi", Coding.GSM7, parts, callback, created,
                      expires)


class Nodes:
    """Stores of one backend sharing one database, as the daemons of several nodes would."""

    def __init__(self, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self._path = tmp_path / "store.sqlite3"
        self._url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
        self.opened: list[Store] = []

    def config(self, node: str = "a") -> StoreConfig:
        return StoreConfig(self._path, url=self._url, node=node)

    async def open(self, node: str = "a") -> SqlStore:
        store = make_store(self.config(node))
        assert isinstance(store, SqlStore)
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgresql"])
async def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Nodes]:
    nodes = Nodes(request.param, tmp_path, request)
    yield nodes
    for store in nodes.opened:
        await store.close()


@pytest.fixture
async def store(nodes: Nodes) -> SqlStore:
    return await nodes.open()


async def submitted(store: SqlStore, parts: int = 1, ids: list[str] | None = None) -> str:
    message = new_message(parts)
    await store.accept(message)
    [claimed] = await store.claim(10, NOW, 60)
    assert claimed.sms_id == message.sms_id and claimed.previous_attempts == 0
    await store.mark_submitted(message.sms_id, "smsc", ids or [f"{message.sms_id[:8]}-{i}" for i in range(parts)],
                               NOW + 1, NOW + 100)
    return message.sms_id


async def test_happy_path_and_history(store: SqlStore) -> None:
    sms_id = await submitted(store, ids=["A1"])
    result = await store.apply_receipt(Receipt("smsc", "A1", PartOutcome.DELIVERED), NOW + 2)
    assert result.sms_id == sms_id and result.final_state is State.DELIVERED
    view = await store.get(sms_id)
    assert view is not None and view.state is State.DELIVERED and view.attempts == 1
    assert [h.state for h in view.history] == [State.ACCEPTED, State.QUEUED, State.SUBMITTED, State.DELIVERED]
    assert view.parts[0].smsc_id == "A1" and view.parts[0].state == "delivered"
    assert view.callback_state == "pending"
    [job] = await store.claim_callbacks(10, NOW + 3, 30)
    assert job.sms_id == sms_id and job.attempts == 1
    assert isinstance(job.subject, MessageView) and job.subject.state is State.DELIVERED  # read with the claim
    assert await store.claim_callbacks(10, NOW + 3, 30) == []  # leased
    await store.callbacks_done([job.job_id], NOW + 4)
    assert (await store.get(sms_id)).callback_state == "done"  # type: ignore[union-attr]


async def test_receipt_before_submit_is_kept_and_applied(store: SqlStore) -> None:
    early = await store.apply_receipt(Receipt("smsc", "E1", PartOutcome.DELIVERED), NOW)
    assert not early.matched
    message = new_message()
    await store.accept(message)
    await store.claim(10, NOW, 60)
    result = await store.mark_submitted(message.sms_id, "smsc", ["E1"], NOW + 1, NOW + 100)
    assert result.final_state is State.DELIVERED
    assert (await store.get(message.sms_id)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_multipart_needs_every_part_and_one_failure_is_undelivered(store: SqlStore) -> None:
    sms_id = await submitted(store, 3, ["P1", "P2", "P3"])
    assert (await store.apply_receipt(Receipt("smsc", "P1", PartOutcome.DELIVERED), NOW)).final_state is None
    assert (await store.apply_receipt(Receipt("smsc", "P2", PartOutcome.ENROUTE), NOW)).final_state is None
    assert (await store.get(sms_id)).state is State.SUBMITTED  # type: ignore[union-attr]
    result = await store.apply_receipt(Receipt("smsc", "P3", PartOutcome.UNDELIVERED, "005"), NOW)
    assert result.final_state is State.UNDELIVERED
    late = await store.apply_receipt(Receipt("smsc", "P2", PartOutcome.DELIVERED), NOW)
    assert late.final_state is None
    view = await store.get(sms_id)
    assert view is not None and view.state is State.UNDELIVERED and view.error_code == "005"
    assert [p.state for p in view.parts] == ["delivered", "delivered", "undelivered"]


async def test_all_parts_delivered(store: SqlStore) -> None:
    sms_id = await submitted(store, 2, ["Q1", "Q2"])
    await store.apply_receipt(Receipt("smsc", "Q2", PartOutcome.DELIVERED), NOW)
    assert (await store.apply_receipt(Receipt("smsc", "Q2", PartOutcome.DELIVERED), NOW)).final_state is None
    assert (await store.apply_receipt(Receipt("smsc", "Q1", PartOutcome.DELIVERED), NOW)).final_state \
        is State.DELIVERED
    assert (await store.get(sms_id)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_an_accepted_part_settles_its_message_as_acknowledged(store: SqlStore) -> None:
    """ACCEPTD is final: with every other part delivered the message is acknowledged (nothing failed, nothing
    confirmed on the handset); a failed part still makes it undelivered."""
    one = await submitted(store, 1, ["A0"])
    result = await store.apply_receipt(Receipt("smsc", "A0", PartOutcome.ACCEPTED, "000"), NOW)
    assert result.final_state is State.ACKNOWLEDGED
    view = await store.get(one)
    assert view is not None and (view.error_code, view.error_text) == ("000", "part 1: accepted err 000")
    mixed = await submitted(store, 2, ["B0", "B1"])
    assert (await store.apply_receipt(Receipt("smsc", "B0", PartOutcome.ACCEPTED), NOW)).final_state is None
    assert (await store.apply_receipt(Receipt("smsc", "B1", PartOutcome.DELIVERED), NOW)).final_state \
        is State.ACKNOWLEDGED
    view = await store.get(mixed)
    assert view is not None and (view.error_code, view.error_text) == ("", "part 1: accepted")
    failed = await submitted(store, 2, ["C0", "C1"])
    assert (await store.apply_receipt(Receipt("smsc", "C0", PartOutcome.ACCEPTED), NOW)).final_state is None
    assert (await store.apply_receipt(Receipt("smsc", "C1", PartOutcome.DELETED, "012"), NOW)).final_state \
        is State.UNDELIVERED
    view = await store.get(failed)
    assert view is not None and (view.error_code, view.error_text) == ("012", "part 2: deleted err 012")
    stats = await store.stats(0)
    assert stats["failure_reasons"] == [("012", 1)]  # an acknowledged message failed nothing


async def test_a_route_without_receipts_is_sent_at_once(store: SqlStore) -> None:
    message = new_message(2, callback="http://127.0.0.1:9/cb")
    await store.accept(message)
    await store.claim(10, NOW, 60)
    result = await store.mark_submitted(message.sms_id, "modem", ["1", "2"], NOW + 1, None)
    assert (result.sms_id, result.final_state) == (message.sms_id, State.SENT)
    view = await store.get(message.sms_id)
    assert view is not None and view.state is State.SENT and [h.state for h in view.history][-2:] == [
        State.SUBMITTED, State.SENT]
    [job] = await store.claim_callbacks(10, NOW + 2, 30)  # the application hears it at once
    assert job.sms_id == message.sms_id
    assert await store.expire_overdue(NOW + 10**6) == 0


def classed(user: str, priority: Priority, created: float) -> NewMessage:
    return replace(new_message(created=created), username=user, priority=priority)


async def test_claims_go_by_class_and_bulk_users_take_turns(store: SqlStore) -> None:
    alice = [classed("alice", Priority.BULK, NOW + i / 100) for i in range(6)]
    await store.accept_many(alice)
    [first] = await store.claim(1, NOW + 1, 60)  # alice's first turn is out; she has 5 waiting
    bob = [classed("bob", Priority.BULK, NOW + 2 + i / 100) for i in range(3)]
    await store.accept_many(bob)
    normal = classed("carol", Priority.NORMAL, NOW + 3)
    caller = classed("ivr", Priority.INTERACTIVE, NOW + 4)
    for message in (normal, caller):
        await store.accept(message)
    assert [m.sms_id for m in await store.claim(1, NOW + 5, 60, Priority.INTERACTIVE)] == [caller.sms_id]
    assert await store.claim(5, NOW + 5, 60, Priority.INTERACTIVE) == []
    claimed = await store.claim(20, NOW + 5, 60)
    # Bob's turns are numbered from the one being sent (alice's first, claimed): his first shares it.
    expected = [normal] + [m for pair in zip(bob, alice[1:4], strict=True) for m in pair] + alice[4:]
    assert [m.sms_id for m in claimed] == [m.sms_id for m in expected]
    assert first.sms_id == alice[0].sms_id and first.priority is Priority.BULK
    assert [m.priority for m in claimed][:2] == [Priority.NORMAL, Priority.BULK]
    assert [m.order for m in claimed[1:5]] == [(2, 1), (2, 2), (2, 2), (2, 3)]  # what the transports wait by


async def test_a_scheduled_message_waits_outside_the_queue_until_its_time(store: SqlStore) -> None:
    later = replace(new_message(), send_at=NOW + 100, expires_at=NOW + 3700)
    now = new_message()
    await store.accept_many([later, now])
    assert (await store.get(later.sms_id, detail=False)).state is State.SCHEDULED  # type: ignore[union-attr]
    assert [m.sms_id for m in await store.claim(10, NOW + 99, 60)] == [now.sms_id]
    [released] = await store.claim(10, NOW + 100, 60)
    assert released.sms_id == later.sms_id
    view = await store.get(later.sms_id)
    assert view is not None and view.send_at == NOW + 100 and view.history[0].state is State.SCHEDULED


async def test_cancel_before_submission_and_not_after(store: SqlStore) -> None:
    scheduled = replace(new_message(), send_at=NOW + 100)
    queued, waiting = new_message(), new_message(created=NOW + 1)
    for message in (scheduled, queued, waiting):
        await store.accept(message)
    [held] = await store.claim(1, NOW, 60)  # the oldest: queued
    assert held.sms_id == queued.sms_id
    with pytest.raises(NotCancellable, match="being submitted"):
        await store.cancel(queued.sms_id, None, NOW + 1)
    with pytest.raises(MessageNotFound):
        await store.cancel(scheduled.sms_id, "mallory", NOW + 1)  # not hers
    view = await store.cancel(scheduled.sms_id, "alice", NOW + 1)
    assert view.state is State.CANCELLED and view.error_code == "CANCELLED"
    assert (await store.cancel(waiting.sms_id, None, NOW + 2)).state is State.CANCELLED
    assert await store.claim(10, NOW + 50, 60) == []  # neither leaves (the claimed one is still held)
    with pytest.raises(NotCancellable, match="being submitted"):  # its lease ran out: it may be with a transport
        await store.cancel(queued.sms_id, None, NOW + 61)
    with pytest.raises(NotCancellable, match="cancelled"):
        await store.cancel(scheduled.sms_id, None, NOW + 3)
    jobs = await store.claim_callbacks(10, NOW + 5, 30)
    assert sorted(j.sms_id for j in jobs) == sorted([scheduled.sms_id, waiting.sms_id])


LIMITED = Limits({"alice": UserLimits(daily_quota=5, monthly_quota=7)})


async def test_quota_refuses_what_does_not_fit_and_resets_the_next_day(store: SqlStore) -> None:
    day = 86400.0
    first = [new_message(parts=2) for _ in range(3)]  # 6 parts: the third does not fit in 5
    refusals = await store.accept_many(first, LIMITED)
    assert refusals[:2] == [None, None] and isinstance(refusals[2], QuotaExceeded)
    assert "daily quota of 5" in refusals[2].message and "resets at 2027-01-16T00:00+00:00" in refusals[2].message
    assert await store.get(first[2].sms_id) is None
    await store.accept(new_message(parts=1), LIMITED)  # 5 of 5
    with pytest.raises(QuotaExceeded, match="daily quota"):
        await store.accept(new_message(parts=1), LIMITED)
    tomorrow = replace(new_message(parts=2, created=NOW + day), expires_at=NOW + day + 3600)
    await store.accept(tomorrow, LIMITED)  # a new day: 2 of 5, and 7 of 7 this month
    with pytest.raises(QuotaExceeded, match="monthly quota of 7 message parts; it resets at 2027-02-01T00:00"):
        await store.accept(replace(tomorrow, sms_id=str(uuid.uuid4())), LIMITED)
    await store.accept(replace(new_message(), username="bob"), LIMITED)  # bob has no quota
    assert await store.quota_use([("alice", "daily 2027-01-15"), ("alice", "monthly 2027-01")]) == {
        ("alice", "daily 2027-01-15"): 5, ("alice", "monthly 2027-01"): 7}


async def test_max_rate_gives_each_message_its_turn(store: SqlStore) -> None:
    paced = Limits({"alice": UserLimits(max_rate=2.0)})
    burst = [new_message() for _ in range(4)]
    await store.accept_many(burst, paced)

    async def claimed(at: float) -> list[str]:
        return [m.sms_id for m in await store.claim(10, at, 1000, limits=paced)]

    assert await claimed(NOW) == [burst[0].sms_id]
    assert await claimed(NOW + 0.5) == [burst[1].sms_id]
    assert sorted(await claimed(NOW + 1.5)) == sorted([burst[2].sms_id, burst[3].sms_id])
    # Scheduled for one time, they still leave one turn apart when it comes.
    batch = [replace(new_message(), send_at=NOW + 100) for _ in range(3)]
    await store.accept_many(batch, paced)
    first = await claimed(NOW + 100)
    assert len(first) == 1 and await claimed(NOW + 100.4) == []
    assert sorted(first + await claimed(NOW + 101)) == sorted(m.sms_id for m in batch)


async def test_a_renewed_claim_is_not_taken_again(nodes: Nodes) -> None:
    a = await nodes.open("a")
    message = new_message()
    await a.accept(message)
    [claimed] = await a.claim(10, NOW, 60)
    assert await a.renew_claims([claimed.sms_id], NOW + 150) == 1
    assert await a.claim(10, NOW + 100, 60) == []  # past the first lease, within the renewed one
    assert [m.sms_id for m in await a.claim(10, NOW + 150, 60)] == [message.sms_id]
    if nodes.backend == "postgresql":  # another node cannot renew what it does not hold
        b = await nodes.open("b")
        assert await b.renew_claims([message.sms_id], NOW + 10**6) == 0


async def test_turns_of_cancelled_messages_are_given_back(store: SqlStore) -> None:
    paced = Limits({"alice": UserLimits(max_rate=1.0)})
    campaign = [new_message() for _ in range(100)]
    await store.accept_many(campaign, paced)  # turns NOW .. NOW + 99
    for message in campaign[1:]:
        await store.cancel(message.sms_id, None, NOW + 1)
    later = new_message(created=NOW + 2)
    await store.accept(later, paced)
    view = await store.get(later.sms_id, detail=False)
    assert view is not None and view.state is State.ACCEPTED  # its turn is now, not 98 s away


async def test_reused_smsc_id_goes_to_the_waiting_part(store: SqlStore) -> None:
    first = await submitted(store, ids=["0"])
    await store.apply_receipt(Receipt("smsc", "0", PartOutcome.DELIVERED), NOW + 2)
    second = await submitted(store, ids=["0"])  # a simulator restarted its numbering
    result = await store.apply_receipt(Receipt("smsc", "0", PartOutcome.EXPIRED), NOW + 3)
    assert result.sms_id == second and result.final_state is State.EXPIRED
    assert (await store.get(first)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_illegal_transition_writes_nothing(store: SqlStore) -> None:
    message = new_message()
    await store.accept(message)
    with pytest.raises(IllegalTransition):
        await store.mark_submitted(message.sms_id, "smsc", ["X"], NOW, NOW + 100)
    view = await store.get(message.sms_id)
    assert view is not None and view.state is State.ACCEPTED and view.parts == ()


async def test_retry_release_and_expiry(store: SqlStore) -> None:
    message = new_message(expires=NOW + 50)
    await store.accept(message)
    await store.claim(10, NOW, 60)
    await store.retry_later(message.sms_id, NOW + 10, "ESME_RTHROTTLED", "throttled", NOW, attempted=True)
    assert await store.claim(10, NOW + 5, 60) == []
    [again] = await store.claim(10, NOW + 10, 60)
    assert again.previous_attempts == 1
    # A crash now: the claim is released by the next start and the message is due at once.
    assert await store.release_claims(NOW + 11) == 1
    assert len(await store.claim(10, NOW + 11, 60)) == 1
    await store.release_claims(NOW + 60)
    assert await store.claim(10, NOW + 60, 60) == []  # past its validity: expired instead
    view = await store.get(message.sms_id)
    assert view is not None and view.state is State.EXPIRED and view.callback_state == "pending"


async def test_waiting_for_a_transport_is_one_history_entry(store: SqlStore) -> None:
    message = new_message()
    await store.accept(message)
    for look in range(20):  # no transport ready: the dispatcher looks every 2 s
        await store.claim(10, NOW + 2 * look, 60)
        await store.retry_later(message.sms_id, NOW + 2 * look + 2, "NO_TRANSPORT_READY", "none ready",
                                NOW + 2 * look, attempted=False)
    await store.claim(10, NOW + 40, 60)
    await store.retry_later(message.sms_id, NOW + 45, "ESME_RTHROTTLED", "throttled", NOW + 40, attempted=True)
    await store.claim(10, NOW + 45, 60)
    await store.retry_later(message.sms_id, NOW + 50, "ESME_RTHROTTLED", "throttled", NOW + 45, attempted=True)
    view = await store.get(message.sms_id)
    assert view is not None and view.updated_at == NOW + 45
    waits = [h.detail.split(": ", 1)[1].split()[0] for h in view.history
             if h.state is State.QUEUED and ": " in h.detail]
    assert waits == ["NO_TRANSPORT_READY", "ESME_RTHROTTLED", "ESME_RTHROTTLED"]


async def test_receipt_deadline_expires(store: SqlStore) -> None:
    sms_id = await submitted(store)
    assert await store.expire_overdue(NOW + 50) == 0
    assert await store.expire_overdue(NOW + 101) == 1
    view = await store.get(sms_id)
    assert view is not None and view.state is State.EXPIRED and view.error_code == "NO_RECEIPT"


async def test_concurrent_accepts_commit_together(store: SqlStore) -> None:
    messages = [new_message() for _ in range(500)]
    await asyncio.gather(*(store.accept(m) for m in messages))
    assert (await store.stats(0))["states"] == {"accepted": 500}


async def test_a_batch_of_accepts_is_committed_all_or_none(store: SqlStore) -> None:
    batch = [new_message() for _ in range(600)]
    await store.accept_many(batch)
    clash = [new_message(), new_message(), batch[7]]
    with pytest.raises(ServiceUnavailable):
        await store.accept_many(clash)
    assert (await store.stats(0))["states"] == {"accepted": 600}
    assert await store.get(clash[0].sms_id) is None


async def test_a_failing_operation_does_not_take_its_batch_down(store: SqlStore) -> None:
    good, twin = new_message(), new_message()
    duplicate = NewMessage(twin.sms_id, *[getattr(twin, f) for f in twin.__slots__[1:]])  # type: ignore[attr-defined]
    results = await asyncio.gather(store.accept(good), store.accept(twin), store.accept(duplicate),
                                   return_exceptions=True)
    assert results[0] is None and results[1] is None and isinstance(results[2], ServiceUnavailable)
    assert await store.get(good.sms_id) is not None


async def test_submits_recorded_together_keep_their_own_outcomes(store: SqlStore) -> None:
    """Submits of one batch are written by shared statements; each still gets its own result or error."""
    messages = [new_message() for _ in range(40)]
    await asyncio.gather(*(store.accept(m) for m in messages))
    assert len(await store.claim(100, NOW, 60)) == 40
    await store.apply_receipt(Receipt("smsc", "early-7", PartOutcome.DELIVERED), NOW)
    await store.finish(messages[3].sms_id, State.FAILED, "X", "given up", NOW)
    results = await asyncio.gather(*(
        store.mark_submitted(m.sms_id, "smsc", ["early-7" if i == 7 else f"id-{i}"], NOW + 1, NOW + 100)
        for i, m in enumerate(messages)), return_exceptions=True)
    assert isinstance(results[3], IllegalTransition)
    assert not isinstance(results[7], BaseException) and results[7].final_state is State.DELIVERED
    assert all(not isinstance(r, BaseException) and r.final_state is None
               for i, r in enumerate(results) if i not in (3, 7))
    views = [await store.get(m.sms_id) for m in messages]
    assert [v.state for v in views if v] == [State.FAILED if i == 3 else State.DELIVERED if i == 7 else State.SUBMITTED
                                             for i in range(40)]
    assert views[12] is not None and views[12].parts[0].smsc_id == "id-12" and views[12].transport == "smsc"


async def test_receipts_applied_together_do_what_each_alone_does(store: SqlStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Receipts of one batch share statements where they can (final receipts of one-part messages) and go one
    by one where they cannot; the outcome is the same as applying each alone, in order."""
    batch_sizes: list[int] = []
    grouped = batched.apply_all_receipts

    def counting(db: Db, items: list[batched.ReceiptAt]) -> list[ReceiptResult]:
        batch_sizes.append(len(items))
        return grouped(db, items)
    monkeypatch.setattr(batched, "apply_all_receipts", counting)

    async def world(name: str) -> tuple[list[str], list[Receipt]]:
        ids = [await submitted(store, ids=[f"{name}-{i}"]) for i in range(16)]
        ids.append(await submitted(store, 2, [f"{name}-m1", f"{name}-m2"]))
        plain = new_message(callback=None)
        await store.accept(plain)
        await store.claim(10, NOW, 60)
        await store.mark_submitted(plain.sms_id, "smsc", [f"{name}-plain"], NOW + 1, NOW + 100)
        ids.append(plain.sms_id)
        await store.apply_receipt(Receipt("smsc", f"{name}-13", PartOutcome.DELIVERED), NOW + 1)  # final already
        await store.finish(ids[14], State.EXPIRED, "NO_RECEIPT", "no receipt in time", NOW + 1)  # before its receipt
        receipts = [Receipt("smsc", f"{name}-{i}", PartOutcome.DELIVERED) for i in range(10)] + [
            Receipt("smsc", f"{name}-10", PartOutcome.UNDELIVERED, "005"),
            Receipt("smsc", f"{name}-11", PartOutcome.EXPIRED),
            Receipt("smsc", f"{name}-12", PartOutcome.ENROUTE),
            Receipt("smsc", f"{name}-13", PartOutcome.UNDELIVERED),
            Receipt("smsc", f"{name}-14", PartOutcome.DELIVERED),
            Receipt("smsc", f"{name}-15", PartOutcome.ACCEPTED),
            Receipt("smsc", f"{name}-15", PartOutcome.REJECTED, "00b"),
            Receipt("smsc", f"{name}-m2", PartOutcome.DELIVERED),
            Receipt("smsc", f"{name}-m1", PartOutcome.DELIVERED),
            Receipt("smsc", f"{name}-plain", PartOutcome.DELIVERED),
            Receipt("smsc", f"{name}-unknown", PartOutcome.DELIVERED),
        ]
        return ids, receipts

    alone_ids, alone_receipts = await world("a")
    together_ids, together_receipts = await world("t")
    alone = [await store.apply_receipt(receipt, NOW + 2) for receipt in alone_receipts]
    batch_sizes.clear()
    together = await asyncio.gather(*(store.apply_receipt(receipt, NOW + 2) for receipt in together_receipts))
    assert max(batch_sizes) >= 10 and len(batch_sizes) <= 3  # shared statements, no fallback to one by one

    def same(ids: list[str], results: list[ReceiptResult]) -> list[tuple[int | None, State | None]]:
        return [(ids.index(r.sms_id) if r.sms_id else None, r.final_state) for r in results]
    assert same(together_ids, together) == same(alone_ids, alone)
    assert sum(r.final_state is not None for r in together) == 15

    async def outcome(sms_id: str) -> tuple[object, ...]:
        view = await store.get(sms_id)
        assert view is not None
        return (view.state, view.error_code, view.error_text, view.callback_state,
                [(p.state, p.error_code) for p in view.parts], [(h.state, h.detail) for h in view.history[3:]])
    assert [await outcome(i) for i in together_ids] == [await outcome(i) for i in alone_ids]
    early = await store.mark_submitted((await submitted_later(store)), "smsc", ["t-unknown"], NOW + 3, NOW + 100)
    assert early.final_state is State.DELIVERED  # the unknown id was kept as an early receipt


# A message of a world: its part count, how far it got before the receipts (submitted; submitted and then
# expired; claimed but not yet submitted, so its receipts come early), and whether its route gives receipts.
_MESSAGES = st.tuples(st.integers(1, 3), st.sampled_from(["submitted", "expired", "pending"]), st.booleans())
# A receipt: for which message (beyond the world's messages: an id nobody submitted) and part, what it says.
_RECEIPTS = st.tuples(st.integers(0, 4), st.integers(0, 2), st.sampled_from(list(PartOutcome)),
                      st.sampled_from(["", "005"]))


async def test_grouped_paths_equal_one_by_one_for_any_world(store: SqlStore) -> None:
    """Property: receipts applied in one grouped call (`batched.apply_all_receipts`), then submits recorded in
    one (`batched.mark_all_submitted`, with the early receipts they find), leave the store as applying each alone,
    in order, does: the same results, states, reasons, parts, history and notifications."""

    async def world(name: str, messages: list[tuple[int, str, bool]]) -> list[str]:
        ids = []
        for index, (parts, progress, _) in enumerate(messages):
            message = new_message(parts, callback="http://127.0.0.1/dlr" if index % 2 else None)
            await store.accept(message)
            [claimed] = await store.claim(10, NOW, 60)
            assert claimed.sms_id == message.sms_id
            if progress != "pending":
                await store.mark_submitted(message.sms_id, "smsc", [f"{name}-{index}-{p}" for p in range(parts)],
                                           NOW + 1, NOW + 100)
            if progress == "expired":
                await store.finish(message.sms_id, State.EXPIRED, "NO_RECEIPT", "no receipt in time", NOW + 1)
            ids.append(message.sms_id)
        return ids

    def receipts(name: str, plan: list[tuple[int, int, PartOutcome, str]], count: int) -> list[Receipt]:
        return [Receipt("smsc", f"{name}-{m}-{p}" if m < count else f"{name}-unknown-{m}", outcome, code,
                        NOW + 2 + k / 1000) for k, (m, p, outcome, code) in enumerate(plan)]

    def submits(name: str, messages: list[tuple[int, str, bool]], ids: list[str]) -> list[batched.Submitted]:
        return [batched.Submitted(ids[i], "smsc", tuple(f"{name}-{i}-{p}" for p in range(parts)), NOW + 3,
                                  NOW + 100 if receipted else None)
                for i, (parts, progress, receipted) in enumerate(messages) if progress == "pending"]

    async def outcome(name: str, sms_id: str) -> tuple[object, ...]:
        view = await store.get(sms_id)
        assert view is not None
        return (view.state, view.error_code, view.error_text.replace(name, ""), view.callback_state,
                [(p.state, p.error_code, p.smsc_id.replace(name, "")) for p in view.parts],
                [(h.at, h.state, h.detail.replace(name, "")) for h in view.history])

    def same(ids: list[str], results: list[ReceiptResult]) -> list[tuple[object, ...]]:
        return [(ids.index(r.sms_id) if r.sms_id else None, r.final_state, r.submitted_at) for r in results]

    async def check(messages: list[tuple[int, str, bool]], plan: list[tuple[int, int, PartOutcome, str]]) -> None:
        run = uuid.uuid4().hex[:8]
        alone_name, together_name = f"a{run}", f"t{run}"
        alone_ids = await world(alone_name, messages)
        together_ids = await world(together_name, messages)
        alone = [await store.apply_receipt(r, NOW + 2) for r in receipts(alone_name, plan, len(messages))]
        batch = [batched.ReceiptAt(r, NOW + 2) for r in receipts(together_name, plan, len(messages))]
        together = await store._run(lambda db: batched.apply_all_receipts(db, batch))
        assert same(together_ids, together) == same(alone_ids, alone)
        alone = [await store.mark_submitted(s.sms_id, s.transport, s.smsc_ids, s.now, s.receipt_deadline)
                 for s in submits(alone_name, messages, alone_ids)]
        grouped = submits(together_name, messages, together_ids)
        together = await store._run(lambda db: batched.mark_all_submitted(db, grouped)) if grouped else []
        assert same(together_ids, together) == same(alone_ids, alone)
        assert ([await outcome(together_name, i) for i in together_ids]
                == [await outcome(alone_name, i) for i in alone_ids])

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_MESSAGES, min_size=1, max_size=4), st.lists(_RECEIPTS, min_size=2, max_size=14))
    def grouped_equals_alone(messages: list[tuple[int, str, bool]],
                             plan: list[tuple[int, int, PartOutcome, str]]) -> None:
        asyncio.run(check(messages, plan))  # on a loop of its own: hypothesis drives examples synchronously

    await asyncio.to_thread(grouped_equals_alone)


async def submitted_later(store: SqlStore) -> str:
    message = new_message()
    await store.accept(message)
    await store.claim(10, NOW, 60)
    return message.sms_id


async def test_reads_do_not_wait_for_the_writer(store: SqlStore) -> None:
    """A status, the lists and the status page's counts are read beside the writer: a write that holds it (here
    one that waits for the test) keeps none of them waiting."""
    sms_id = await submitted(store)
    release = threading.Event()
    held = asyncio.ensure_future(store._run(lambda db: release.wait()))
    try:
        view = await store.get(sms_id)
        assert view is not None and view.state is State.SUBMITTED
        assert (await store.stats(0))["states"] == {"submitted": 1}
        assert [m.sms_id for m in await store.list_messages(None, None, None, None, 10)] == [sms_id]
        assert not held.done()
    finally:
        release.set()
        await held


async def test_second_owner_is_refused(store: SqlStore, nodes: Nodes) -> None:
    with pytest.raises(ServiceUnavailable, match="another asterisk-sendsms daemon"):
        await nodes.open("a")


async def test_unwritable_store_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ServiceUnavailable, match="cannot open the message store"):
        await SqliteStore(StoreConfig(blocker / "sub" / "store.sqlite3")).open()


async def test_optouts_are_kept_per_scope_and_seen_by_every_node(nodes: Nodes, store: SqlStore) -> None:
    assert await store.add_optout(OptOut("+3620", "", NOW, "keyword"))
    assert not await store.add_optout(OptOut("+3620", "", NOW + 5, "cli"))  # already there: kept as it was
    assert await store.add_optout(OptOut("+3620", "1234", NOW + 1, "api"))
    assert await store.add_optout(OptOut("+3621", "ACME", NOW + 2, "cli"))
    other = await nodes.open("b") if nodes.backend == "postgresql" else store  # one SQLite file has one daemon
    limits = Limits(optout_classes=frozenset({Priority.NORMAL}))

    async def refused(*pairs: tuple[str, str | None]) -> list[bool]:
        messages = [replace(new_message(), recipient=number, sender=sender) for number, sender in pairs]
        return [error is not None for error in await other.accept_many(messages, limits)]

    assert await refused(("+3620", "ACME"), ("+3621", "ACME"), ("+3621", "1234"), ("+3622", None)) == [
        True, True, False, False]
    # Concurrent accepts, committed together: each learns its own.
    outcomes = await asyncio.gather(*(other.accept(replace(new_message(), recipient=n, sender="ACME"), limits)
                                      for n in ("+3621", "+3622")), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["RecipientOptedOut", "NoneType"]
    assert await other.list_optouts(None, 10) == [OptOut("+3621", "ACME", NOW + 2, "cli"),
                                                  OptOut("+3620", "1234", NOW + 1, "api"),
                                                  OptOut("+3620", "", NOW, "keyword")]
    assert [o.scope for o in await other.list_optouts("+3620", 1)] == ["1234"]
    assert (await other.stats(0))["optouts"] == 3
    assert await other.remove_optout("+3620", "")
    assert not await store.remove_optout("+3620", "")
    assert await refused(("+3620", "ACME"), ("+3620", "1234"), ("+3620", None)) == [False, True, False]


# ---------------------------------------------------------------- schema versions


async def test_schema_versions(nodes: Nodes) -> None:
    store = make_store(nodes.config())
    assert await store.migrate() == (0, store.schema_version)  # type: ignore[attr-defined]
    assert await store.migrate() == (store.schema_version, store.schema_version)  # type: ignore[attr-defined]
    newer = await nodes.open()
    await newer._run(lambda db: db.execute("UPDATE schema_version SET version = version + 1"))
    await newer.close()
    with pytest.raises(ServiceUnavailable, match="newer than this program's"):
        await make_store(nodes.config()).open()


async def test_an_older_sqlite_file_waits_for_migrate(tmp_path: Path) -> None:
    from asterisk_sendsms.store.sqlite import MIGRATIONS
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # a file as version 1 of the program left it, with a message claimed
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute("INSERT INTO messages (sms_id, username, recipient, text, coding, part_count, state, created_at,"
                   " updated_at, expires_at, due_at, claimed) VALUES ('m1', 'alice', '+3620', 'hi', 'gsm7', 1,"
                   f" 'queued', {NOW}, {NOW}, {NOW + 3600}, {NOW + 60}, 1)")
    store = SqliteStore(StoreConfig(path))
    with pytest.raises(ServiceUnavailable,
                       match=f"older than this program's {len(MIGRATIONS)}: run `asterisk-sendsms migrate`"):
        await store.open()
    assert await store.migrate() == (1, len(MIGRATIONS))
    await store.open()
    try:
        assert await store.claim(10, NOW + 1, 60) == []  # its old claim's lease still runs
        [message] = await store.claim(10, NOW + 60, 60)
        assert message.sms_id == "m1" and message.text == "hi"
    finally:
        await store.close()


# ---------------------------------------------------------------- several nodes on one PostgreSQL database


@pytest.fixture
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Nodes]:
    nodes = Nodes("postgresql", tmp_path, request)
    yield nodes
    for store in nodes.opened:
        await store.close()


async def test_nodes_share_the_queue_without_double_claims(shared: Nodes) -> None:
    a, b = await shared.open("a"), await shared.open("b")
    messages = [new_message() for _ in range(400)]
    await asyncio.gather(*(a.accept(m) for m in messages[::2]), *(b.accept(m) for m in messages[1::2]))
    claimed: list[list[str]] = [[], []]

    async def drain(node: SqlStore, into: list[str]) -> None:
        while batch := await node.claim(7, NOW, 60):
            into.extend(m.sms_id for m in batch)

    await asyncio.gather(*(drain(node, into) for node, into in ((a, claimed[0]), (b, claimed[1]), (a, claimed[0]),
                                                                 (b, claimed[1]))))
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(m.sms_id for m in messages)
    assert claimed[0] and claimed[1]


async def test_two_nodes_racing_one_users_quota_never_exceed_it(shared: Nodes) -> None:
    a, b = await shared.open("a"), await shared.open("b")
    limits = Limits({"alice": UserLimits(daily_quota=150)})
    messages = [new_message() for _ in range(400)]
    outcomes = await asyncio.gather(*(node.accept(m, limits) for node, m in zip([a, b] * 200, messages, strict=True)),
                                    return_exceptions=True)
    accepted = [m for m, outcome in zip(messages, outcomes, strict=True) if outcome is None]
    assert all(isinstance(o, QuotaExceeded) for o in outcomes if o is not None)
    assert len(accepted) == 150
    assert len(await a.list_messages(None, None, None, None, 1000)) == 150
    assert await b.quota_use([("alice", "daily 2027-01-15")]) == {("alice", "daily 2027-01-15"): 150}


async def test_a_dead_nodes_claims_pass_to_another_after_the_lease(shared: Nodes) -> None:
    a, b = await shared.open("a"), await shared.open("b")
    message = new_message()
    await a.accept(message)
    assert len(await a.claim(10, NOW, 60)) == 1
    await a.close()  # node a dies holding the message
    assert await b.release_claims(NOW + 1) == 0  # b's own start-up leaves a's claims alone
    assert await b.claim(10, NOW + 59, 60) == []
    [taken] = await b.claim(10, NOW + 60, 60)
    assert taken.sms_id == message.sms_id
    await b.mark_submitted(taken.sms_id, "smsc", ["T1"], NOW + 61, NOW + 200)
    restarted = await shared.open("a")
    assert await restarted.release_claims(NOW + 62) == 0  # nothing of a's is left to give back
    assert (await b.get(message.sms_id)).state is State.SUBMITTED  # type: ignore[union-attr]


async def test_receipts_racing_their_submit_on_another_node(shared: Nodes) -> None:
    a, b = await shared.open("a"), await shared.open("b")
    messages = [new_message(parts=2) for _ in range(150)]
    for message in messages:
        await a.accept(message)
    assert len(await a.claim(len(messages), NOW, 60)) == len(messages)
    ids = {m.sms_id: [f"{m.sms_id}-0", f"{m.sms_id}-1"] for m in messages}
    submits = [a.mark_submitted(sms_id, "smsc", parts, NOW + 1, NOW + 100) for sms_id, parts in ids.items()]
    # Each part's receipt comes in on node b, the two parts at once, while node a records the submit.
    receipts = [b.apply_receipt(Receipt("smsc", part, PartOutcome.DELIVERED), NOW + 1)
                for parts in ids.values() for part in parts]
    interleaved = [job for pair in zip(submits, receipts[::2], receipts[1::2], strict=True) for job in pair]
    await asyncio.gather(*interleaved)
    states = (await a.stats(0))["states"]
    assert states == {"delivered": len(messages)}, states
    assert await b._run(lambda db: db.execute("SELECT COUNT(*) FROM early_receipts").fetchone()[0]) == 0


async def test_database_unreachable_fails_clearly_and_recovers(tmp_path: Path) -> None:
    from .peers.postgres import PostgresServer
    server = PostgresServer()
    server.start()
    try:
        store = make_store(StoreConfig(tmp_path / "unused", url=server.url(), node="a"))
        await store.open()
        first = new_message()
        await store.accept(first)
        server.stop()
        lost = new_message()
        with pytest.raises(ServiceUnavailable, match="message store") as caught:
            await store.accept(lost)
        assert "127.0.0.1" in str(caught.value)
        with pytest.raises(ServiceUnavailable):  # fails at once while the database stays away
            await store.accept(new_message())
        server.start()
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                await store.accept(second := new_message())
                break
            except ServiceUnavailable:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        assert await store.get(first.sms_id) is not None and await store.get(second.sms_id) is not None
        assert await store.get(lost.sms_id) is None  # refused means not written
        await store.close()
    finally:
        server.remove()
