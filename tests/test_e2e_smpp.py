"""The SMPP transport in the real daemon against an independent SMSC (the npm package `smpp` in server mode,
tests/peers/smsc.js): bind, submit, receipts, long messages, UCS-2, throttling, dropped connections, wrong
passwords, receipts before responses, id forms; the connection's own process crashing, or outliving nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import Daemon, Receiver, Smsc, basic_auth, final, gateway_config, send, start_daemon
from .waits import until_status, wait_dispatched


def gateway(daemon_factory: list[Daemon], tmp_path: Path, smsc: Smsc, options: str = "",
            password: str = "secret", extra: str = "") -> Daemon:
    url = f"smpp://esme:{password}@127.0.0.1:{smsc.port}?window=10&enquire_link=1{options}"
    config = gateway_config(tmp_path / "smpp.toml", url, extra)
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))


# The connection in a process of its own (the default), or in the daemon's event loop.
IN_PROCESS_OR_NOT = pytest.mark.parametrize("process", ["yes", "no"])


def smpp_process(daemon: Daemon) -> int:
    """The PID of the daemon's SMPP child process."""
    assert daemon.process is not None
    for child in Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children").read_text().split():
        if _running(int(child)):
            return int(child)
    raise AssertionError("the daemon has no SMPP process")


@IN_PROCESS_OR_NOT
async def test_submit_receipt_and_callback(daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any,
                                           receiver: Receiver, process: str) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, f"&process={process}")
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "Your receipt: 12.50 EUR", "+3612345678", receiver.url)
        data = await final(session, daemon, sms_id)
        async with session.get(f"{daemon.base}/healthz", headers=basic_auth("ops", "pw")) as response:
            health = await response.json()
        async with session.get(f"{daemon.base}/healthz/operator") as response:
            assert response.status == 200 and (await response.json())["name"] == "operator"
        async with session.get(f"{daemon.base}/healthz/nowhere") as response:
            assert response.status == 404
    assert data["state"] == "delivered" and data["transport"] == "operator"
    # Sent as soon as the daemon listened: the dispatcher waited for the bind instead of putting it back.
    assert [h["state"] for h in data["history"]] == ["accepted", "queued", "submitted", "delivered"], data["history"]
    [submit] = smsc.submits()
    assert (submit["source"], submit["source_ton"], submit["source_npi"]) == ("3612345678", 1, 1)
    assert (submit["dest"], submit["dest_ton"], submit["dest_npi"]) == ("36201234567", 1, 1)
    assert submit["registered_delivery"] == 1 and submit["data_coding"] == 0
    assert submit["message"] == "Your receipt: 12.50 EUR"
    assert data["parts"][0]["smsc_id"] == "1000"
    [post] = await receiver.wait_for(1)
    assert post["SmsId"] == sms_id and post["DeliveryStatus"] == "Delivered"
    assert health["transports"][0]["ready"] and "trx: bound" in health["transports"][0]["state"]
    assert daemon.stop() == 0
    assert any(e["event"] == "unbind" for e in smsc.events)  # a polite goodbye on SIGTERM


async def test_long_gsm_and_ucs2_messages_with_udh(daemon_factory: list[Daemon], tmp_path: Path,
                                                   smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc)
    gsm = "Order 17: " + "€ [ok] " * 40  # extension characters, 3 parts
    ucs2 = "Rendelés visszaigazolva 😀 " * 4  # UCS-2 with surrogate pairs: 108 units, 2 parts
    async with aiohttp.ClientSession() as session:
        ids = [await send(session, daemon, "+36201234567", text, "ACME") for text in (gsm, ucs2)]
        results = [await final(session, daemon, sms_id) for sms_id in ids]
    assert [r["state"] for r in results] == ["delivered", "delivered"]
    assert [r["part_count"] for r in results] == [3, 2]
    gsm_parts = [s for s in smsc.submits() if s["data_coding"] == 0]
    ucs2_parts = [s for s in smsc.submits() if s["data_coding"] == 8]
    assert "".join(s["message"] for s in gsm_parts) == gsm
    assert "".join(s["message"] for s in ucs2_parts) == ucs2
    assert [s["udh"][-4:] for s in gsm_parts] == ["0301", "0302", "0303"]
    assert all(s["esm_class"] & 0x40 and s["source"] == "ACME" and s["source_ton"] == 5 for s in gsm_parts)
    assert len({s["udh"][:-2] for s in gsm_parts}) == 1  # one reference for the whole message


async def test_sar_tlvs_instead_of_udh(daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, "&long=sar")
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "x" * 200))
    assert data["state"] == "delivered"
    parts = smsc.submits()
    assert [p["sar"]["seq"] for p in parts] == [1, 2] and {p["sar"]["total"] for p in parts} == {2}
    assert all(p["udh"] == "" and not p["esm_class"] & 0x40 for p in parts)


@pytest.mark.parametrize(("smsc_options", "url_options"), [
    ({"id_form": "hex-dec"}, "&ids=hex-dec"),
    ({"id_form": "hex-dec", "receipt_tlvs": True}, "&ids=hex-dec"),
    ({"id_form": "padded"}, ""),
    ({"receipts_first": True}, ""),
    ({"id_form": "restart-at-zero", "receipt_tlvs": True}, ""),
])
async def test_receipts_correlate_whatever_the_id_form(daemon_factory: list[Daemon], tmp_path: Path,
                                                       smsc_factory: Any, smsc_options: dict[str, Any],
                                                       url_options: str) -> None:
    smsc = smsc_factory(**smsc_options)
    daemon = gateway(daemon_factory, tmp_path, smsc, url_options)
    async with aiohttp.ClientSession() as session:
        ids = [await send(session, daemon, f"+3620{i:07d}", f"message {i}") for i in range(5)]
        results = [await final(session, daemon, sms_id) for sms_id in ids]
    assert [r["state"] for r in results] == ["delivered"] * 5
    assert all(e["status"] == 0 for e in smsc.events if e["event"] == "receipt_resp")


async def test_intermediate_receipts_are_recorded_not_final(daemon_factory: list[Daemon], tmp_path: Path,
                                                            smsc_factory: Any) -> None:
    smsc = smsc_factory(intermediate=True, receipt_delay_ms=200)
    daemon = gateway(daemon_factory, tmp_path, smsc)
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "hi"))
    details = [h["detail"] for h in data["history"]]
    assert data["state"] == "delivered" and any(d.startswith("part 1: enroute") for d in details)


async def test_throttling_slows_down_and_keeps_the_message(daemon_factory: list[Daemon], tmp_path: Path,
                                                           smsc_factory: Any) -> None:
    smsc = smsc_factory(throttle_first=3)
    daemon = gateway(daemon_factory, tmp_path, smsc)
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "patience"))
    assert data["state"] == "delivered" and data["attempts"] == 1  # retried within the submit
    assert len(smsc.submits()) == 4
    assert daemon.output().count("ESME_RTHROTTLED: pausing") == 1  # logged once per throttling episode


async def test_permanent_refusal_is_rejected_with_its_status_name(daemon_factory: list[Daemon], tmp_path: Path,
                                                                  smsc_factory: Any, receiver: Receiver) -> None:
    smsc = smsc_factory(reject_prefix="3699", undeliverable_prefix="3698")
    daemon = gateway(daemon_factory, tmp_path, smsc)
    async with aiohttp.ClientSession() as session:
        rejected = await send(session, daemon, "+36991234567", "no", report_url=receiver.url)
        undelivered = await send(session, daemon, "+36981234567", "no", report_url=receiver.url)
        states = [(await final(session, daemon, i))["state"] for i in (rejected, undelivered)]
    assert states == ["rejected", "undelivered"]
    posts = {p["SmsId"]: p for p in await receiver.wait_for(2)}
    assert posts[rejected]["ErrorCode"] == "ESME_RINVDSTADR"
    assert posts[undelivered]["DeliveryStatus"] == "Undelivered"


@IN_PROCESS_OR_NOT
async def test_dropped_connection_mid_window_loses_nothing(daemon_factory: list[Daemon], tmp_path: Path,
                                                           smsc_factory: Any, process: str) -> None:
    smsc = smsc_factory(drop_after=4)
    daemon = gateway(daemon_factory, tmp_path, smsc, f"&process={process}")
    async with aiohttp.ClientSession() as session:
        ids = await asyncio.gather(*(send(session, daemon, f"+3620{i:07d}", f"burst {i}") for i in range(12)))
        results = [await final(session, daemon, sms_id, timeout=30) for sms_id in ids]
    assert [r["state"] for r in results] == ["delivered"] * 12
    binds = [e for e in smsc.events if e["event"] == "bind" and e["ok"]]
    assert len(binds) >= 2  # it rebound after the drop
    resent = len(smsc.submits()) - 12
    print(f"\n12 messages, connection dropped on the 4th submit_sm: all delivered, {resent} submit_sm sent again")


async def test_wrong_password_is_reported_once_and_messages_wait(daemon_factory: list[Daemon], tmp_path: Path,
                                                                 smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, password="wrong-pw")
    await smsc.wait_for(lambda: any(e["event"] == "bind" for e in smsc.events))
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "waiting")
        # Claimed and put back: the dispatcher found no transport ready for it.
        await until_status(session, daemon, sms_id, lambda data: data["error_code"] == "NO_TRANSPORT_READY")
        async with session.get(f"{daemon.base}/healthz", headers=basic_auth("ops", "pw")) as response:
            health = await response.json()
            assert response.status == 503
        async with session.get(f"{daemon.base}/api/messages/{sms_id}", headers=basic_auth("alice", "pw")) as r:
            state = (await r.json())["state"]
    assert state in ("accepted", "queued")  # kept, not failed
    assert "bind refused: ESME_RINVPASWD" in health["transports"][0]["state"]
    assert daemon.output().count("bind refused: ESME_RINVPASWD") == 1
    assert "wrong-pw" not in daemon.output()


async def test_unanswered_submit_goes_back_to_the_queue(daemon_factory: list[Daemon], tmp_path: Path,
                                                        smsc_factory: Any) -> None:
    smsc = smsc_factory(silent_after=0)
    daemon = gateway(daemon_factory, tmp_path, smsc, "&response_timeout=0.5")
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "anyone?")
        await smsc.wait_for(lambda: len(smsc.submits()) >= 2)
        async with session.get(f"{daemon.base}/api/messages/{sms_id}", headers=basic_auth("alice", "pw")) as r:
            data = await r.json()
    assert data["state"] == "queued" and data["error_code"] == "RESPONSE_TIMEOUT"


async def test_transmitter_and_receiver_binds(daemon_factory: list[Daemon], tmp_path: Path,
                                              smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, "&bind=txrx")
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "two binds"))
    assert data["state"] == "delivered"
    assert sorted(e["mode"] for e in smsc.events if e["event"] == "bind" and e["ok"]) == ["rx", "tx"]


@IN_PROCESS_OR_NOT
async def test_incoming_sms_are_stored_and_posted(daemon_factory: list[Daemon], tmp_path: Path,
                                                  smsc_factory: Any, receiver: Receiver, process: str) -> None:
    long_text = "Please call me back about order 17, I will be at home all afternoon. " * 3
    smsc = smsc_factory(mo=[{"source": "36201234567", "dest": "1234", "text": "STOP"},
                            {"source": "36209876543", "dest": "1234", "text": long_text, "parts": 2},
                            {"source": "36205555555", "dest": "1234", "text": "Köszönöm 😀"}])
    gateway(daemon_factory, tmp_path, smsc, f"&process={process}", extra=f'[incoming]\nurl = "{receiver.url}"\n')
    posts = await receiver.wait_for(3)
    by_sender = {p["Sender"]: p for p in posts}
    assert all(p["NotificationName"] == "IncomingSMS" and p["Recipient"] == "1234" for p in posts)
    assert by_sender["+36201234567"]["Message"] == "STOP"
    assert by_sender["+36209876543"]["Message"] == long_text  # both parts, in order, as one message
    assert by_sender["+36205555555"]["Message"] == "Köszönöm 😀"
    await smsc.wait_for(lambda: len([e for e in smsc.events if e["event"] == "mo_resp"]) == 4)
    assert all(e["status"] == 0 for e in smsc.events if e["event"] == "mo_resp")


async def test_a_route_without_receipts(daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any,
                                        receiver: Receiver) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, "&receipts=no")
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "no receipt wanted", report_url=receiver.url)
        data = await final(session, daemon, sms_id)
    assert smsc.submits()[0]["registered_delivery"] == 0
    # Final once submitted: nothing more will be known of it, and the application hears so at once.
    assert data["state"] == "sent"
    assert [h["state"] for h in data["history"]] == ["accepted", "queued", "submitted", "sent"]
    [post] = await receiver.wait_for(1)
    assert (post["SmsId"], post["DeliveryStatus"], post["ErrorCode"]) == (sms_id, "Sent", "")
    assert not any(e["event"] == "receipt_resp" for e in smsc.events)


# Receipts by destination prefix, as SMSCs send them: each final state of SMPP 3.4 Appendix B, and each message
# type of esm_class (5.2.12) other than a plain SMS.
RECEIPT_PLANS = {
    "3690": [{"stat": "ACCEPTD"}],
    "3691": [{"stat": "UNKNOWN"}],
    "3692": [{"stat": "DELETED"}],
    "3693": [{"stat": "ENROUTE", "esm_class": 0x20}, {"stat": "DELIVRD", "esm_class": 0x20},
             {"stat": "EXPIRED", "delay_ms": 400}],
    "3694": [{"stat": "DELIVRD", "esm_class": 0x08}],
    "3695": [{"stat": "DELIVRD", "esm_class": 0x10}, {"stat": "DELIVRD", "delay_ms": 400}],
    "3696": [{"stat": "DELIVRD", "esm_class": 0x18}, {"stat": "REJECTD", "delay_ms": 400}],
    "3697": [{"stat": "DELIVRD", "esm_class": 0x24}, {"stat": "DELIVRD", "delay_ms": 400}],
}


@pytest.mark.parametrize("receipt_tlvs", [False, True], ids=["text", "tlvs"])
async def test_every_final_state_is_final_and_each_message_type_means_what_smpp_says(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any, receiver: Receiver,
        receipt_tlvs: bool) -> None:
    smsc = smsc_factory(receipts_by_prefix=RECEIPT_PLANS, receipt_tlvs=receipt_tlvs)
    daemon = gateway(daemon_factory, tmp_path, smsc, extra=f'[incoming]\nurl = "{receiver.url}"\n')
    async with aiohttp.ClientSession() as session:
        ids = {prefix: await send(session, daemon, f"+{prefix}1234567", f"to {prefix}", report_url=receiver.url)
               for prefix in RECEIPT_PLANS}
        # Final at once, not after the 48 h receipt timeout: the finals come within a second.
        data = {prefix: await final(session, daemon, sms_id, timeout=10) for prefix, sms_id in ids.items()}
    states = {prefix: d["state"] for prefix, d in data.items()}
    assert states == {"3690": "acknowledged", "3691": "undelivered", "3692": "undelivered", "3693": "expired",
                      "3694": "delivered", "3695": "delivered", "3696": "rejected", "3697": "delivered"}
    posts = await receiver.wait_for(len(ids) + 1)
    reports = {p["SmsId"]: p for p in posts if p["NotificationName"] == "SMSDeliveryReport"}
    said = {prefix: (reports[sms_id]["DeliveryStatus"], reports[sms_id]["ErrorMessage"])
            for prefix, sms_id in ids.items()}
    assert said["3690"] == ("Acknowledged", "part 1: accepted err 001")
    assert said["3691"] == ("Undelivered", "part 1: unknown err 001")
    assert said["3692"] == ("Undelivered", "part 1: deleted err 001")
    assert said["3694"] == ("Delivered", "")
    # 0x20: intermediate, whatever state it names: both kept in the history, neither final.
    assert [h["detail"] for h in data["3693"]["history"] if h["detail"].startswith("part")] == [
        "part 1: enroute err 001", "part 1: enroute err 000"]
    assert said["3693"] == ("Expired", "part 1: expired err 001")
    # 0x10: the user's own answer, an incoming SMS from the phone.
    [answer] = [p for p in posts if p["NotificationName"] == "IncomingSMS"]
    assert answer["Sender"] == "36951234567" and answer["Message"].startswith("id:")
    responses = {(e["esm_class"], e["stat"]): e["status"] for e in smsc.events if e["event"] == "receipt_resp"}
    assert responses[(0x18, "DELIVRD")] == 0  # a conversation abort: acknowledged, nothing to record
    assert responses[(0x24, "DELIVRD")] == 0x43  # a reserved type: ESME_RINVESMCLASS
    assert all(status == 0 for (esm, _), status in responses.items() if esm != 0x24)
    daemon.stop()
    assert daemon.output().count("reserved message type") == 1


async def test_a_crashed_smpp_process_is_started_again_and_loses_nothing(daemon_factory: list[Daemon],
                                                                        tmp_path: Path, smsc_factory: Any) -> None:
    smsc = smsc_factory(response_delay_ms=200, receipt_delay_ms=500)
    daemon = gateway(daemon_factory, tmp_path, smsc)
    await smsc.wait_for(lambda: any(e["event"] == "bind" and e["ok"] for e in smsc.events))
    async with aiohttp.ClientSession() as session:
        ids = await asyncio.gather(*(send(session, daemon, f"+3620{i:07d}", f"crash {i}") for i in range(12)))
        await smsc.wait_for(lambda: len(smsc.submits()) >= 5)
        os.kill(smpp_process(daemon), signal.SIGKILL)  # submits and receipts in flight
        results = [await final(session, daemon, sms_id, timeout=30) for sms_id in ids]
    assert [r["state"] for r in results] == ["delivered"] * 12
    assert len([e for e in smsc.events if e["event"] == "bind" and e["ok"]]) == 2
    assert "SMPP operator process exited (signal 9); starting it again in 1 s" in daemon.output()


async def test_the_smpp_process_ends_with_the_daemon(daemon_factory: list[Daemon], tmp_path: Path,
                                                     smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc)
    await smsc.wait_for(lambda: any(e["event"] == "bind" and e["ok"] for e in smsc.events))
    child = smpp_process(daemon)
    daemon.kill9()
    await smsc.wait_for(lambda: any(e["event"] == "unbind" for e in smsc.events))  # it said goodbye first
    deadline = time.monotonic() + 10
    while _running(child):
        assert time.monotonic() < deadline, "the SMPP process outlived its daemon"
        await asyncio.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return b"asterisk_sendsms.runtime.smpp_child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


async def test_stopping_every_process_at_once_still_drains_the_window(daemon_factory: list[Daemon], tmp_path: Path,
                                                                      smsc_factory: Any) -> None:
    """systemd stops a service by signalling each of its processes: the SMPP process waits for the daemon,
    which lets the answer to the submit in flight arrive before the unbind."""
    smsc = smsc_factory(response_delay_ms=400)
    daemon = gateway(daemon_factory, tmp_path, smsc)
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "in flight at shutdown")
        await smsc.wait_for(lambda: len(smsc.submits()) == 1)
        os.kill(smpp_process(daemon), signal.SIGTERM)
        assert daemon.stop() == 0
        again = start_daemon(daemon_factory, daemon.data_dir, *daemon.args)
        await smsc.wait_for(lambda: sum(e["event"] == "bind" and e["ok"] for e in smsc.events) >= 2)
        await wait_dispatched(session, again)  # bound again, and nothing left that it could submit
        async with session.get(f"{again.base}/api/messages/{sms_id}", headers=basic_auth("alice", "pw")) as r:
            data = await r.json()
    assert data["state"] in ("submitted", "delivered") and len(smsc.submits()) == 1, (data, smsc.submits())
