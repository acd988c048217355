"""The SQLite store on a real file: lifecycle through the table, receipts (early, repeated, multi-part),
the callback outbox, claims after a crash, group commit under concurrency, failures that write nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.encoding import Coding
from asterisk_sendsms.errors import IllegalTransition, ServiceUnavailable
from asterisk_sendsms.lifecycle import State
from asterisk_sendsms.model import MessageView, NewMessage, PartOutcome, Receipt
from asterisk_sendsms.store import SqliteStore

NOW = 1_800_000_000.0


def new_message(parts: int = 1, callback: str | None = "http://127.0.0.1/dlr", expires: float = NOW + 3600,
                created: float = NOW) -> NewMessage:
    return NewMessage(str(uuid.uuid4()), "alice", "+3630", "+3620", "hi", Coding.GSM7, parts, callback, created,
                      expires)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(StoreConfig(tmp_path / "store.sqlite3"))
    await store.open()
    yield store
    await store.close()


async def submitted(store: SqliteStore, parts: int = 1, ids: list[str] | None = None) -> str:
    message = new_message(parts)
    await store.accept(message)
    [claimed] = await store.claim(10, NOW, 60)
    assert claimed.sms_id == message.sms_id and claimed.previous_attempts == 0
    await store.mark_submitted(message.sms_id, "smsc", ids or [f"{message.sms_id[:8]}-{i}" for i in range(parts)],
                               NOW + 1, NOW + 100)
    return message.sms_id


async def test_happy_path_and_history(store: SqliteStore) -> None:
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


async def test_receipt_before_submit_is_kept_and_applied(store: SqliteStore) -> None:
    early = await store.apply_receipt(Receipt("smsc", "E1", PartOutcome.DELIVERED), NOW)
    assert not early.matched
    message = new_message()
    await store.accept(message)
    await store.claim(10, NOW, 60)
    result = await store.mark_submitted(message.sms_id, "smsc", ["E1"], NOW + 1, NOW + 100)
    assert result.final_state is State.DELIVERED
    assert (await store.get(message.sms_id)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_multipart_needs_every_part_and_one_failure_is_undelivered(store: SqliteStore) -> None:
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


async def test_all_parts_delivered(store: SqliteStore) -> None:
    sms_id = await submitted(store, 2, ["Q1", "Q2"])
    await store.apply_receipt(Receipt("smsc", "Q2", PartOutcome.DELIVERED), NOW)
    assert (await store.apply_receipt(Receipt("smsc", "Q2", PartOutcome.DELIVERED), NOW)).final_state is None
    assert (await store.apply_receipt(Receipt("smsc", "Q1", PartOutcome.DELIVERED), NOW)).final_state \
        is State.DELIVERED
    assert (await store.get(sms_id)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_reused_smsc_id_goes_to_the_waiting_part(store: SqliteStore) -> None:
    first = await submitted(store, ids=["0"])
    await store.apply_receipt(Receipt("smsc", "0", PartOutcome.DELIVERED), NOW + 2)
    second = await submitted(store, ids=["0"])  # a simulator restarted its numbering
    result = await store.apply_receipt(Receipt("smsc", "0", PartOutcome.EXPIRED), NOW + 3)
    assert result.sms_id == second and result.final_state is State.EXPIRED
    assert (await store.get(first)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_illegal_transition_writes_nothing(store: SqliteStore) -> None:
    message = new_message()
    await store.accept(message)
    with pytest.raises(IllegalTransition):
        await store.mark_submitted(message.sms_id, "smsc", ["X"], NOW, NOW + 100)
    view = await store.get(message.sms_id)
    assert view is not None and view.state is State.ACCEPTED and view.parts == ()


async def test_retry_release_and_expiry(store: SqliteStore) -> None:
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


async def test_receipt_deadline_expires(store: SqliteStore) -> None:
    sms_id = await submitted(store)
    assert await store.expire_overdue(NOW + 50) == 0
    assert await store.expire_overdue(NOW + 101) == 1
    view = await store.get(sms_id)
    assert view is not None and view.state is State.EXPIRED and view.error_code == "NO_RECEIPT"


async def test_concurrent_accepts_commit_together(store: SqliteStore, tmp_path: Path) -> None:
    messages = [new_message() for _ in range(500)]
    await asyncio.gather(*(store.accept(m) for m in messages))
    with sqlite3.connect(tmp_path / "store.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (500,)


async def test_a_failing_operation_does_not_take_its_batch_down(store: SqliteStore) -> None:
    good, twin = new_message(), new_message()
    duplicate = NewMessage(twin.sms_id, *[getattr(twin, f) for f in twin.__slots__[1:]])  # type: ignore[attr-defined]
    results = await asyncio.gather(store.accept(good), store.accept(twin), store.accept(duplicate),
                                   return_exceptions=True)
    assert results[0] is None and results[1] is None and isinstance(results[2], ServiceUnavailable)
    assert await store.get(good.sms_id) is not None


async def test_second_owner_is_refused(store: SqliteStore, tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable, match="another asterisk-sendsms daemon"):
        await SqliteStore(StoreConfig(tmp_path / "store.sqlite3")).open()


async def test_unwritable_store_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ServiceUnavailable, match="cannot open the message store"):
        await SqliteStore(StoreConfig(blocker / "sub" / "store.sqlite3")).open()
