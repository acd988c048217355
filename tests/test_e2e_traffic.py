"""Traffic classes and validity periods in the real daemon against the npm SMSC, paced by the gateway's
`throughput=`: a caller's message overtakes a bulk backlog, bulk users take turns, a class the user may not use
is refused; a ValidityPeriod is sent as submit_sm's validity_period and enforced here."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from lxml import etree

from asterisk_sendsms.app.dispatcher import STORE_PIPELINE
from asterisk_sendsms.core.passwords import hash_password

from .conftest import Daemon, Receiver, Smsc, basic_auth, gateway_config, start_daemon
from .waits import wait_dispatched

BOB = f"""
[[users]]
name = "bob"
password_hash = "{hash_password('pw')}"
[[users]]
name = "campaigns"
password_hash = "{hash_password('pw')}"
priorities = ["bulk"]
"""


def gateway(daemon_factory: list[Daemon], tmp_path: Path, smsc: Smsc, options: str) -> Daemon:
    url = f"smpp://esme:secret@127.0.0.1:{smsc.port}?enquire_link=1{options}"
    return start_daemon(daemon_factory, tmp_path / "data", "--config",
                        str(gateway_config(tmp_path / "smpp.toml", url, BOB)))


async def ozeki_send(session: aiohttp.ClientSession, daemon: Daemon, recipient: str, priority: str = "",
                     user: str = "alice", **extra: str) -> tuple[str, str]:
    form = {"Command": "SendSms", "Username": user, "Password": "pw", "Recipient": recipient, "Message": "code",
            **extra}
    if priority:
        form["Priority"] = priority
    async with session.post(f"{daemon.base}/api", data=form) as response:
        root = etree.fromstring(await response.read())
    return root.findtext("Code") or "", root.findtext("Message") or ""


def submitted(smsc: Smsc) -> list[str]:
    return [submit["dest"] for submit in smsc.submits()]


async def test_a_callers_message_overtakes_a_bulk_backlog(daemon_factory: list[Daemon], tmp_path: Path,
                                                          smsc_factory: Any) -> None:
    smsc = smsc_factory()
    # window 1 and 40/s: the backlog (600) is more than the dispatcher's pipeline holds (window + 256), so the
    # interactive message must pass both the store's queue and the claimed messages waiting for the window.
    daemon = gateway(daemon_factory, tmp_path, smsc, "&window=1&throughput=40")
    async with aiohttp.ClientSession() as session:
        for start in range(0, 600, 50):
            codes = await asyncio.gather(*(ozeki_send(session, daemon, f"+3620{n:07d}", "bulk")
                                           for n in range(start, start + 50)))
            assert {code for code, _ in codes} == {"200"}
        await smsc.wait_for(lambda: len(smsc.submits()) >= 20)
        assert (await ozeki_send(session, daemon, "+36309999999", "Interactive"))[0] == "200"
        # The JSON API takes the class too.
        async with session.post(f"{daemon.base}/api/messages", headers=basic_auth("alice", "pw"),
                                json={"recipient": "+36308888888", "text": "code", "priority": "interactive"}) as r:
            assert r.status == 201
        await smsc.wait_for(lambda: {"36309999999", "36308888888"} <= set(submitted(smsc)))
        async with session.get(f"{daemon.base}/metrics", headers=basic_auth("ops", "pw")) as response:
            metrics = await response.text()
        async with session.get(f"{daemon.base}/status", headers=basic_auth("ops", "pw")) as response:
            page = await response.text()
    order = submitted(smsc)
    ahead = min(order.index("36309999999"), order.index("36308888888"))
    behind_bulk = len([dest for dest in order[:ahead] if dest.startswith("3620")])
    # FIFO would have sent the 580 bulk messages queued before them first; by class they wait for the window
    # and for what the pipeline had already handed to the transport, a few at 40/s.
    print("interactive after", ahead, "submits")
    assert ahead < 40, (ahead, behind_bulk)
    assert len(order) < 100
    depth = {line.split('"')[1]: int(line.split()[-1]) for line in metrics.splitlines()
             if line.startswith("sendsms_class_queue_depth{")}
    assert depth["interactive"] == depth["normal"] == 0 and 450 < depth["bulk"] < 600
    assert 'sendsms_class_queue_oldest_seconds{priority="bulk"}' in metrics
    assert "<h2>Waiting to be sent, by traffic class</h2>" in page and "<td>bulk</td>" in page
    # Per transport: what the dispatcher handed it (the pipeline: the window plus 256) waits there by class.
    handed = {line.split('"')[3]: int(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith('sendsms_transport_waiting{transport="operator"')}
    assert 100 < handed["bulk"] <= 1 + STORE_PIPELINE and "interactive" not in handed, handed
    assert 'sendsms_transport_waiting_oldest_seconds{transport="operator",priority="bulk"}' in metrics
    assert "handed over, by class" in page and "bulk " in page


async def test_bulk_users_take_turns(daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, "&window=1&throughput=50")
    async with aiohttp.ClientSession() as session:
        for start in range(0, 400, 50):
            await asyncio.gather(*(ozeki_send(session, daemon, f"+3620{n:07d}", "bulk")
                                   for n in range(start, start + 50)))
        await smsc.wait_for(lambda: len(smsc.submits()) >= 10)
        codes = [await ozeki_send(session, daemon, f"+3650{n:07d}", "bulk", user="bob") for n in range(20)]
        assert {code for code, _ in codes} == {"200"}
        await smsc.wait_for(lambda: len([d for d in submitted(smsc) if d.startswith("3650")]) == 20, timeout=60)
    order = submitted(smsc)
    last_bob = max(i for i, dest in enumerate(order) if dest.startswith("3650"))
    # Bob's turns were numbered from alice's next one when he sent: his 20 go out within the dispatcher's refill of
    # its pipeline (64) and their own number, not after the ~380 of alice's queued before them as in a FIFO.
    assert last_bob < 10 + 64 + 20 + 30, last_bob
    assert len(order) < 200


async def test_a_class_the_user_may_not_use_is_refused(daemon_factory: list[Daemon], tmp_path: Path,
                                                       smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, "")
    async with aiohttp.ClientSession() as session:
        code, text = await ozeki_send(session, daemon, "+36201234567", "interactive", user="campaigns")
        assert (code, text) == ("306", "Forbidden user: campaigns may not send interactive messages")
        code, text = await ozeki_send(session, daemon, "+36201234567", user="campaigns")  # normal, by default
        assert code == "306"
        assert (await ozeki_send(session, daemon, "+36201234567", "BULK", user="campaigns"))[0] == "200"
        code, text = await ozeki_send(session, daemon, "+36201234567", "urgent")
        assert code == "302" and "'Priority'" in text and "interactive, normal or bulk" in text
        async with session.post(f"{daemon.base}/api/messages", headers=basic_auth("alice", "pw"),
                                json={"recipient": "+36201234567", "text": "x", "priority": "urgent"}) as r:
            assert r.status == 400 and "'priority'" in (await r.json())["error"]
        async with session.get(f"{daemon.base}/api/messages", headers=basic_auth("ops", "pw")) as r:
            listed = await r.json()
    assert len(listed) == 1  # nothing refused was stored


async def test_a_validity_period_is_sent_to_the_smsc_and_kept_here(daemon_factory: list[Daemon], tmp_path: Path,
                                                                   smsc_factory: Any, receiver: Receiver) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, "&window=10")
    sent = time.monotonic()
    async with aiohttp.ClientSession() as session:
        assert (await ozeki_send(session, daemon, "+36201111111", ValidityPeriod="PT5M"))[0] == "200"
        async with session.post(f"{daemon.base}/api/messages", headers=basic_auth("alice", "pw"),
                                json={"recipient": "+36202222222", "text": "code", "validity_period": "90"}) as r:
            assert r.status == 201
        assert (await ozeki_send(session, daemon, "+36203333333"))[0] == "200"
        for bad in ("-5", "tomorrow", "P8D", "0", "PT"):
            code, text = await ozeki_send(session, daemon, "+36204444444", ValidityPeriod=bad)
            assert code == "302" and "'ValidityPeriod'" in text, (bad, text)
        await smsc.wait_for(lambda: len(smsc.submits()) == 3)
    # What is left of it when the part leaves, as the SMSC's SMPP library reads the relative time format: at
    # most what was asked, at least what was asked less the time this test has waited (a loaded machine may
    # take seconds) and the format's rounding down to whole seconds.
    waited = time.monotonic() - sent + 1
    left = {submit["dest"]: submit["validity_left"] for submit in smsc.submits()}
    assert 300 - waited <= left["36201111111"] <= 300 and 90 - waited <= left["36202222222"] <= 90, left
    assert left["36203333333"] is None  # none asked for: the SMSC's own


async def test_a_message_whose_validity_ends_before_it_can_be_sent_expires_here(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any, receiver: Receiver) -> None:
    smsc = smsc_factory(refuse_binds=1000)  # the SMSC is there but refuses every bind: nothing can be sent
    daemon = gateway(daemon_factory, tmp_path, smsc, "")
    async with aiohttp.ClientSession() as session:
        code, _ = await ozeki_send(session, daemon, "+36201234567", ValidityPeriod="1",
                                   DeliveryReportURL=receiver.url)
        assert code == "200"
        [post] = await receiver.wait_for(1)
    assert (post["DeliveryStatus"], post["ErrorCode"]) == ("Expired", "EXPIRED")
    assert smsc.submits() == []


async def test_messages_waiting_for_their_transport_past_the_lease_are_sent_once(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any) -> None:
    # A window of 1 at 40/s holds 257 claimed messages for over 6 s, three times the 2 s lease: without its
    # claims renewed the dispatcher would claim them again and send them twice.
    smsc = smsc_factory()
    url = f"smpp://esme:secret@127.0.0.1:{smsc.port}?enquire_link=1&window=1&throughput=40"
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config",
                          str(gateway_config(tmp_path / "smpp.toml", url, BOB, lease=2)))
    async with aiohttp.ClientSession() as session:
        for start in range(0, 300, 50):
            codes = await asyncio.gather(*(ozeki_send(session, daemon, f"+3620{n:07d}", "bulk")
                                           for n in range(start, start + 50)))
            assert {code for code, _ in codes} == {"200"}
        await smsc.wait_for(lambda: len(set(submitted(smsc))) == 300, timeout=30)
        await wait_dispatched(session, daemon)  # nothing is left that could be submitted again
    assert len(submitted(smsc)) == 300
    assert "illegal transition" not in daemon.output()
