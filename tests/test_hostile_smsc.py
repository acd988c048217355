"""The real daemon against a hostile SMSC (tests/peers/hostile_smsc.py): malformed PDUs, PDUs out of state,
broken receipts, floods, endless streams, silence, generic_nack for everything, connections dropped mid-PDU
or reset under load. In every case the daemon stays up, still accepts over HTTP, logs the trouble without
secrets or message texts, and every message accepted before and during the misbehaviour is delivered once
the SMSC behaves again."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from asterisk_sendsms.wire.smpp.pdu import Command, Pdu, Status, encode_pdu
from asterisk_sendsms.wire.smpp.session import BindState, SmppSession, Unreadable

from .conftest import Daemon, final, gateway_config, send, start_daemon
from .peers.hostile_smsc import DELIVER_SM, ENQUIRE_LINK, GENERIC_NACK, MO_FLOOD, RESP, UNBIND, HostileSmsc

PASSWORD = "pw4Hstl"  # must never show in the log
TEXT = "confidential text"  # nor must any message text


@pytest.fixture
async def smsc() -> AsyncIterator[HostileSmsc]:
    peer = await HostileSmsc(password=PASSWORD).start()
    yield peer
    await peer.stop()


async def gateway(daemon_factory: list[Daemon], tmp_path: Path, smsc: HostileSmsc, process: str) -> Daemon:
    url = (f"smpp://esme:{PASSWORD}@127.0.0.1:{smsc.port}?window=10&enquire_link=1&response_timeout=1"
           f"&process={process}")
    config = gateway_config(tmp_path / "smpp.toml", url)
    # In a thread: the SMSC runs in this event loop and must answer the bind while the daemon starts.
    daemon = await asyncio.to_thread(start_daemon, daemon_factory, tmp_path / "data", "--config", str(config))
    await smsc.wait_for(lambda: smsc.count("bind") >= 1)
    return daemon


def responses(smsc: HostileSmsc, command: int) -> list[int]:
    """The statuses of the responses of that command the daemon sent."""
    return [int(str(e[2])) for e in smsc.events if e[0] == "resp" and e[1] == command]


@dataclass(frozen=True)
class Case:
    kind: str
    times: int = 1
    # The misbehaviour comes at a new connection: the current one is dropped to get there.
    at_connect: bool = False
    # What the daemon must have done about it, as seen by the SMSC (waited for).
    check: Callable[[HostileSmsc], bool] | None = None
    # The daemon logs this about it (once per connection it happened on).
    logged: str = ""


def _nacked(status: int) -> Callable[[HostileSmsc], bool]:
    return lambda smsc: status in responses(smsc, GENERIC_NACK)


def _deliver_refused(status: int) -> Callable[[HostileSmsc], bool]:
    return lambda smsc: status in responses(smsc, DELIVER_SM | RESP)


def _broken_receipts_answered(smsc: HostileSmsc) -> bool:
    # Each broken receipt is answered (acknowledged and dropped, or refused), none leaves the SMSC waiting.
    return len(responses(smsc, DELIVER_SM | RESP)) >= 9 + 1


def _flood_answered(smsc: HostileSmsc) -> bool:
    return len(responses(smsc, ENQUIRE_LINK | RESP)) >= 20_000


def _mo_flood_stored(smsc: HostileSmsc) -> bool:
    # Every incoming SMS acknowledged as stored (reading paused while 1024 were being stored), none refused.
    return responses(smsc, DELIVER_SM | RESP).count(0) >= MO_FLOOD


def _endless_held_back(smsc: HostileSmsc) -> bool:
    # The daemon stopped reading while its answers piled up unread: the stream stalled within the sockets'
    # buffers (a few MB), not the hundreds of MB the seconds until the enquire_link timeout would carry.
    sent = [int(str(e[1])) for e in smsc.events if e[0] == "endless_sent"]
    if sent:
        print(f"\nendless stream of PDUs: {sent[0] / 1e6:.1f} MB taken before the daemon dropped the connection")
        assert sent[0] < 32e6
    return bool(sent)


def _unbind_answered(smsc: HostileSmsc) -> bool:
    return responses(smsc, UNBIND | RESP) == [0]


CASES = [
    # Malformed PDUs
    Case("garbage", logged="out of step"),
    Case("short_length", logged="outside 16..65536"),
    Case("huge_length", logged="PDU length 2147483647 outside"),
    Case("truncated_body", check=_nacked(0x01), logged="short_message runs past the PDU"),
    Case("bad_tlv", check=_nacked(0xC0), logged="runs past the PDU"),
    Case("missing_fields", check=_nacked(0x02), logged="DELIVER_SM ends before"),
    Case("unknown_command", check=_nacked(0x03), logged="unknown command_id 0x00000999"),
    Case("endless_garbage", logged="out of step"),
    # Out of state
    Case("deliver_before_bind", at_connect=True, check=_deliver_refused(0x04), logged="a deliver_sm while binding"),
    Case("unknown_resp", logged="for no request in flight"),
    Case("bind_resp_twice", at_connect=True),
    Case("mismatched_resp", logged="BIND_TRANSCEIVER_RESP answers sequence"),
    Case("unbind_mid_window", check=_unbind_answered, logged="the SMSC unbound"),
    # Receipts
    Case("broken_receipts", check=_broken_receipts_answered, logged="a receipt without id or state"),
    # Floods, streams, silence, refusals, drops
    Case("enquire_flood", check=_flood_answered),
    Case("mo_flood", check=_mo_flood_stored),
    Case("endless_pdus", check=_endless_held_back, logged="no enquire_link_resp"),
    Case("silent", at_connect=True, logged="bind failed: no bind_transceiver_resp within 1s"),
    Case("silent_after_bind", logged="no enquire_link_resp"),
    Case("nack_all", times=2, at_connect=True, logged="bind refused: ESME_RINVCMDID"),
    Case("nack_submits", times=3),
    Case("drop_mid_pdu"),  # closed or reset, as the kernel has it
    Case("die_under_load"),
]
# Where the child process and the daemon's own event loop differ: the writes to a connection that died, the
# backpressure of a peer that does not read, the work of a flood.
IN_THE_DAEMON = {"die_under_load", "endless_pdus", "enquire_flood", "mo_flood", "unbind_mid_window", "garbage"}


@pytest.mark.parametrize(("case", "process"), [
    *[pytest.param(case, "yes", id=case.kind) for case in CASES],
    *[pytest.param(case, "no", id=f"{case.kind}-in-daemon") for case in CASES if case.kind in IN_THE_DAEMON],
])
async def test_hostile_smsc(daemon_factory: list[Daemon], tmp_path: Path, smsc: HostileSmsc, case: Case,
                            process: str) -> None:
    daemon = await gateway(daemon_factory, tmp_path, smsc, process)
    async with aiohttp.ClientSession() as session:
        before = [await send(session, daemon, f"+3620100{i:04d}", f"{TEXT} before {i}") for i in range(3)]
        smsc.misbehave(case.kind, case.times)
        if case.at_connect:
            smsc.kick()
        load = 30 if case.kind == "die_under_load" else 6
        during = await asyncio.gather(*(send(session, daemon, f"+3620200{i:04d}", f"{TEXT} during {i}")
                                        for i in range(load)))
        await smsc.wait_for(lambda: smsc.queued == 0 and smsc.count("misbehaved") >= case.times)
        after = await send(session, daemon, "+36203000000", f"{TEXT} after")
        results = [await final(session, daemon, sms_id, timeout=60) for sms_id in [*before, *during, after]]
    assert [r["state"] for r in results] == ["delivered"] * len(results), [
        (r["state"], r.get("error_code")) for r in results]
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon stopped"
    if case.check is not None:
        check = case.check
        await smsc.wait_for(lambda: check(smsc), timeout=60)
    output = daemon.output()
    assert "Traceback" not in output and "RuntimeError" not in output, output
    assert PASSWORD not in output and TEXT not in output, output
    if case.logged:
        assert case.logged in output, output
        # Once per connection it happened on, not once per PDU.
        assert output.count(case.logged) <= case.times, output
    assert daemon.stop() == 0


# ---------------------------------------------------------------- the session's rules, without a socket


def _bound_session() -> SmppSession:
    session = SmppSession()
    bind = Pdu(Command.BIND_TRANSCEIVER, params={"system_id": "esme", "password": "pw"})
    session.request(bind)
    assert session.receive_data(encode_pdu(Pdu(Command.BIND_TRANSCEIVER_RESP, bind.sequence, 0,
                                               {"system_id": "smsc"})))
    assert session.state is BindState.BOUND
    return session


def test_what_cannot_be_read_comes_out_in_its_place_and_the_rest_still_counts() -> None:
    session = _bound_session()
    submit = Pdu(Command.SUBMIT_SM, params={"destination_addr": "3620", "short_message": b"x"})
    session.request(submit)
    good = encode_pdu(Pdu(Command.SUBMIT_SM_RESP, submit.sequence, 0, {"message_id": "42"}))
    unknown = struct.pack(">IIII", 16, 0x999, 0, 7)
    truncated = struct.pack(">IIII", 17, Command.DELIVER_SM, 0, 8) + b"\x00"  # ends after service_type
    bad_tlv = encode_pdu(Pdu(Command.ENQUIRE_LINK, 9)) + b"\x00\x1e\x03\x84"
    bad_tlv = struct.pack(">I", len(bad_tlv)) + bad_tlv[4:]
    out_of_step = struct.pack(">I", 0x7FFFFFFF) + b"\0" * 12
    pdus = session.receive_data(good + unknown + truncated + bad_tlv + out_of_step + good)
    assert isinstance(pdus[0], Pdu) and pdus[0].text("message_id") == "42"
    assert [(p.sequence, p.status, p.fatal) for p in pdus[1:] if isinstance(p, Unreadable)] == [
        (7, Status.ESME_RINVCMDID, False), (8, Status.ESME_RINVCMDLEN, False),
        (9, Status.ESME_RINVOPTPARSTREAM, False), (0, Status.ESME_RINVCMDLEN, True)]
    assert session.receive_data(good) == []  # out of step: nothing more is read
    assert session.refuse(pdus[1]) == encode_pdu(Pdu(Command.GENERIC_NACK, 7, Status.ESME_RINVCMDID))


def test_a_response_of_the_wrong_kind_fails_its_request_and_late_ones_are_ignored() -> None:
    session = _bound_session()
    submit = Pdu(Command.SUBMIT_SM, params={"destination_addr": "3620", "short_message": b"x"})
    session.request(submit)
    [wrong] = session.receive_data(encode_pdu(Pdu(Command.BIND_TRANSCEIVER_RESP, submit.sequence, 0)))
    assert isinstance(wrong, Unreadable) and wrong.is_response and session.outstanding == 0
    session.request(submit)
    session.forget(submit.sequence)  # timed out
    [late] = session.receive_data(encode_pdu(Pdu(Command.SUBMIT_SM_RESP, submit.sequence, 0, {"message_id": "1"})))
    assert isinstance(late, Pdu) and session.outstanding == 0


def test_a_delivery_before_the_bind_is_refused_in_stream_order() -> None:
    session = SmppSession()
    bind = Pdu(Command.BIND_TRANSCEIVER, params={"system_id": "esme", "password": "pw"})
    session.request(bind)
    deliver = encode_pdu(Pdu(Command.DELIVER_SM, 5, 0, {"esm_class": 4, "short_message": b"id:1 stat:DELIVRD"}))
    bound = encode_pdu(Pdu(Command.BIND_TRANSCEIVER_RESP, bind.sequence, 0, {"system_id": "smsc"}))
    early, _, in_time = session.receive_data(deliver + bound + deliver)
    assert isinstance(early, Unreadable) and early.read and isinstance(in_time, Pdu)
    assert session.refuse(early) == encode_pdu(Pdu(Command.DELIVER_SM_RESP, 5, Status.ESME_RINVBNDSTS))
