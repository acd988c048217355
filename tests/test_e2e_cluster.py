"""Two gateway daemons on one PostgreSQL database (a throw-away cluster of Debian's server) and one SMSC peer:
each message is submitted by exactly one node, receipts arriving on the other node's bind are correlated, every
notification goes out once, and the messages of a node killed while holding them pass to the other when their
lease runs out."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from asterisk_sendsms.store.postgres import MIGRATIONS

from .conftest import RUN, Daemon, Receiver, Smsc, final, gateway_config, send, start_daemon
from .waits import wait_notified

MESSAGES = 200


def node(daemon_factory: list[Daemon], tmp_path: Path, name: str, database: str, smsc: Smsc,
         lease: float = 120.0) -> Daemon:
    config = write_config(tmp_path, name, database, smsc, lease)
    return start_daemon(daemon_factory, tmp_path / name, "--config", str(config))


def write_config(tmp_path: Path, name: str, database: str, smsc: Smsc, lease: float = 120.0) -> Path:
    return gateway_config(tmp_path / f"{name}.toml", f"smpp://esme:secret@127.0.0.1:{smsc.port}?window=10&enquire_link=1",
                          f'[store]\nurl = "{database}"\nnode = "{name}"', lease)


async def send_all(daemons: list[Daemon], texts: list[str], report_url: str = "") -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, index: int) -> str:
        async with gate:
            return await send(session, daemons[index % len(daemons)], f"+3620{index:07d}", texts[index],
                              report_url=report_url)

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session, i) for i in range(len(texts)))))


async def test_two_nodes_share_one_queue_and_correlate_each_others_receipts(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Callable[..., Smsc], postgres_url: str,
        receiver: Receiver) -> None:
    smsc = smsc_factory(receipt_delay_ms=50)
    migrated = subprocess.run([str(RUN), "migrate", "--config", str(write_config(tmp_path, "a", postgres_url, smsc))],
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0 and f"migrated from version 0 to {len(MIGRATIONS)}" in migrated.stdout, migrated
    a = node(daemon_factory, tmp_path, "a", postgres_url, smsc)
    b = node(daemon_factory, tmp_path, "b", postgres_url, smsc)
    await smsc.wait_for(lambda: len([e for e in smsc.events if e["event"] == "bind" and e["ok"]]) == 2)
    texts = [f"cluster message {i}" for i in range(MESSAGES)]
    sms_ids = await send_all([a, b], texts, receiver.url)
    async with aiohttp.ClientSession() as session:
        finals = [await final(session, (a, b)[i % 2], sms_id, timeout=60) for i, sms_id in enumerate(sms_ids)]
    assert Counter(f["state"] for f in finals) == {"delivered": MESSAGES}

    submits = smsc.submits()
    per_text = Counter(s["message"] for s in submits)
    assert sorted(per_text) == sorted(texts) and set(per_text.values()) == {1}, "each message submitted once"
    by_session = Counter(s["session"] for s in submits)
    assert len(by_session) == 2, f"both nodes submit: {by_session}"
    # The SMSC sends every receipt on the bind made last: the messages the other node submitted are
    # correlated through the shared database.
    receipt_sessions = {e["session"] for e in smsc.events if e["event"] == "receipt_resp"}
    assert len(receipt_sessions) == 1
    crossed = sum(count for session, count in by_session.items() if session not in receipt_sessions)
    assert crossed > 0
    print(f"\n{MESSAGES} messages through two nodes: submits per SMSC session {dict(by_session)}, "
          f"{crossed} receipts arrived on the node that did not submit, all delivered")

    posts = await receiver.wait_for(MESSAGES, timeout=60)
    async with aiohttp.ClientSession() as session:
        await wait_notified(session, a, sms_ids)  # none can be posted again, by either node
    assert Counter(p["SmsId"] for p in receiver.posts) == Counter(sms_ids), "one notification per message"
    assert {p["DeliveryStatus"] for p in posts} == {"Delivered"}
    assert a.stop() == 0 and b.stop() == 0
    assert "cluster message" not in a.output() + b.output(), "message texts stay out of the logs"


async def test_a_dead_nodes_messages_pass_to_another_after_the_lease(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Callable[..., Smsc], postgres_url: str) -> None:
    silent = smsc_factory(silent_after=0)  # takes submits, never answers
    working = smsc_factory()
    a = node(daemon_factory, tmp_path, "a", postgres_url, silent, lease=3)
    count = 20
    sms_ids = await send_all([a], [f"takeover {i}" for i in range(count)])
    await silent.wait_for(lambda: len(silent.submits()) == 10)  # the window is full, ten more wait in memory
    a.kill9()
    b = node(daemon_factory, tmp_path, "b", postgres_url, working, lease=3)
    async with aiohttp.ClientSession() as session:
        finals: list[dict[str, Any]] = [await final(session, b, sms_id, timeout=60) for sms_id in sms_ids]
    assert [f["state"] for f in finals] == ["delivered"] * count
    assert sorted(s["message"] for s in working.submits()) == sorted(f"takeover {i}" for i in range(count))
    print(f"\nnode a killed holding {count} messages ({len(silent.submits())} on the wire, never answered: "
          f"the possible duplicates); node b sent all {count} after the lease")
    assert b.stop() == 0
