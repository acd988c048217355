"""The modem transport in the real daemon, driving the emulator through a real pseudo-terminal's device path
as a user would configure it."""

from __future__ import annotations

import asyncio
import os
import select
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asterisk_sendsms.core.passwords import hash_password
from asterisk_sendsms.wire.modem.at import CNMI_NO_REPORTS, CNMI_REPORTS

from .conftest import Daemon, Receiver, basic_auth, start_daemon, wait_final
from .peers.fake_modem import PROFILES, FakeModem
from .test_e2e_smpp import send
from .test_e2e_traffic import ozeki_send
from .waits import until_healthy, until_status, wait_until


def gateway(daemon_factory: list[Daemon], tmp_path: Path, modem: FakeModem, options: str = "",
            extra: str = "") -> Daemon:
    config = tmp_path / "modem.toml"
    config.write_text(f"""{extra}
[dispatch]
retry_initial = 0.3
retry_max = 1
[[users]]
name = "alice"
password_hash = "{hash_password('pw')}"
admin = true  # /healthz shows transport details to admins
[[transports]]
name = "gsm"
url = "modem://{modem.path}?timeout=1{options}"
""")
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))


async def final(session: aiohttp.ClientSession, daemon: Daemon, sms_id: str, timeout: float = 30) -> dict[str, Any]:
    return await wait_final(session, daemon, sms_id, timeout, user="alice", password="pw")


async def test_send_in_pdu_mode_and_correlate_status_reports(daemon_factory: list[Daemon], tmp_path: Path,
                                                            modem_factory: Any) -> None:
    modem = modem_factory()
    daemon = gateway(daemon_factory, tmp_path, modem)
    long_text = "Köszönjük a rendelést! Szállítás holnap 😀 " * 3
    async with aiohttp.ClientSession() as session:
        short = await final(session, daemon, await send(session, daemon, "+36201234567", "Hello [world] €"))
        long = await final(session, daemon, await send(session, daemon, "+36207654321", long_text))
    assert short["state"] == "delivered" and long["state"] == "delivered"
    assert modem.commands[:6] == ["AT", "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", "AT+CNMI=2,1,0,1,0"]
    assert all(p["status_report"] for p in modem.submits)
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.base}/healthz",
                                                                       headers=basic_auth("alice", "pw")) as response:
        health = (await response.json())["transports"][0]
    assert health["ready"] and "signal 20/31 (-73 dBm)" in health["detail"]
    first, *rest = modem.submits
    assert first["number"] == "+36201234567" and first["text"] == "Hello [world] €"
    texts = [str(p["text"]).encode("utf-16-be", "surrogatepass").decode("utf-16-be") for p in rest]
    assert "".join(texts) == long_text and len(rest) == long["part_count"] > 1
    assert [p["smsc_id"] for p in long["parts"]] == [f"{n}:+36207654321" for n in range(2, 2 + len(rest))]


async def test_echo_off_pin_and_report_before_result(daemon_factory: list[Daemon], tmp_path: Path,
                                                     modem_factory: Any) -> None:
    modem = modem_factory(echo=False, pin="1234", report_first=True)
    daemon = gateway(daemon_factory, tmp_path, modem, "&pin=1234")
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "PIN ok"))
    assert data["state"] == "delivered"
    assert 'AT+CPIN="1234"' in modem.commands


async def test_missing_pin_is_reported_and_the_message_waits(daemon_factory: list[Daemon], tmp_path: Path,
                                                             modem_factory: Any) -> None:
    modem = modem_factory(pin="1234")
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "waiting for the PIN")
        await until_status(session, daemon, sms_id, lambda data: data["error_code"] == "NO_TRANSPORT_READY")
        async with session.get(f"{daemon.base}/healthz", headers=basic_auth("alice", "pw")) as response:
            health = await response.json()
        async with session.get(f"{daemon.base}/api/messages/{sms_id}", headers=basic_auth("alice", "pw")) as r:
            state = (await r.json())["state"]
    assert "the SIM asks for a PIN" in health["transports"][0]["state"] and not health["transports"][0]["ready"]
    assert state in ("accepted", "queued") and modem.submits == []
    assert daemon.output().count("the SIM asks for a PIN") == 1


async def test_cms_errors_retry_or_reject(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any,
                                          receiver: Receiver) -> None:
    modem = modem_factory(cms_on_send=500)
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, daemon, "+36201234567", "try again")
        await until_status(session, daemon, sms_id, lambda data: data["attempts"] >= 1)  # tried, to be retried
        modem.cms_on_send = None  # the network recovers
        retried = await final(session, daemon, sms_id)
        modem.cms_on_send = 21  # short message transfer rejected: never going through
        rejected = await final(session, daemon, await send(session, daemon, "+36201234567", "no", "",
                                                           receiver.url))
    assert retried["state"] == "delivered" and retried["attempts"] > 1
    assert rejected["state"] == "rejected" and rejected["error_code"] == "CMS_21"
    [post] = await receiver.wait_for(1)
    assert post["DeliveryStatus"] == "Rejected" and post["ErrorCode"] == "CMS_21"


async def test_a_silent_modem_is_reset_and_nothing_is_lost(daemon_factory: list[Daemon], tmp_path: Path,
                                                          modem_factory: Any) -> None:
    modem = modem_factory(silent_after=6, silent_for=2.5)  # goes quiet right after initialisation
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "are you there?"))
    assert data["state"] == "delivered" and data["attempts"] >= 2
    assert "stopped answering" in daemon.output() or "no answer" in daemon.output()
    assert modem.commands.count("AT+CMGF=0") >= 2  # initialised again after the reset


@pytest.mark.parametrize(("profile", "direct"), [("standard", False), ("standard", True), ("second", False),
                                                 ("second_no_ds", True)])
async def test_incoming_sms_stored_and_posted(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any,
                                              receiver: Receiver, profile: str, direct: bool) -> None:
    modem = modem_factory(profile=profile, incoming=[("+36301112222", "Call me back please")],
                          incoming_direct=direct)
    gateway(daemon_factory, tmp_path, modem, extra=f'[incoming]\nurl = "{receiver.url}"')
    [post] = await receiver.wait_for(1)
    assert post["NotificationName"] == "IncomingSMS" and post["Sender"] == "+36301112222"
    assert post["Message"] == "Call me back please" and post["Transport"] == "gsm"
    await wait_until(lambda: modem.deleted == ([] if direct else [1]))  # deleted once stored, before the post
    # +CMTI: read from the SIM, then deleted there (after it was stored); +CMT: never on the SIM
    assert modem.deleted == ([] if direct else [1]) and modem.stored == {}


async def test_stored_status_reports_are_read_and_deleted(daemon_factory: list[Daemon], tmp_path: Path,
                                                          modem_factory: Any) -> None:
    modem = modem_factory(reports_stored=True, report_status=0x46)  # validity period expired
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "late"))
    assert data["state"] == "expired" and data["error_code"] == "46"
    await wait_until(lambda: bool(modem.deleted))
    assert "AT+CMGR=101" in modem.commands and modem.deleted == [101]


def pool(daemon_factory: list[Daemon], tmp_path: Path, modems: list[FakeModem], balance: str) -> Daemon:
    transports = "".join(f'[[transports]]\nname = "gsm{i}"\nurl = "modem://{m.path}?timeout=1&pin=1234"\n'
                         for i, m in enumerate(modems))
    config = tmp_path / "pool.toml"
    config.write_text(f"""
[[users]]
name = "alice"
password_hash = "{hash_password('pw')}"
{transports}
[[routes]]
prefix = "+36"
transports = [{", ".join(f'"gsm{i}"' for i in range(len(modems)))}]
balance = "{balance}"
""")
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))


async def test_modem_pool_round_robin(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any) -> None:
    modems = [modem_factory(), modem_factory()]
    daemon = pool(daemon_factory, tmp_path, modems, "round-robin")
    async with aiohttp.ClientSession() as session:
        await until_healthy(session, daemon)  # both initialised
        for i in range(4):
            data = await final(session, daemon, await send(session, daemon, f"+3620{i:07d}", f"pool {i}"))
            assert data["state"] == "delivered"
    assert [len(m.submits) for m in modems] == [2, 2]


async def test_failover_to_the_next_modem(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any) -> None:
    modems = [modem_factory(pin="9999"), modem_factory()]  # the first SIM refuses our PIN: never ready
    daemon = pool(daemon_factory, tmp_path, modems, "failover")
    async with aiohttp.ClientSession() as session:
        states = [(await final(session, daemon, await send(session, daemon, "+36201234567", f"fo {i}")))["state"]
                  for i in range(3)]
    assert states == ["delivered"] * 3 and modems[0].submits == [] and len(modems[1].submits) == 3
    assert "AT+CPIN=\"1234\" refused: +CME ERROR: 16 (incorrect password)" in daemon.output()


@pytest.mark.parametrize(("profile", "options", "state", "first_octet"), [
    ("standard", "", "delivered", 49),  # SMS-SUBMIT, relative validity period, status report request
    ("second", "&receipts=no", "sent", 17),  # no AT+CSCS either: its own character set is GSM enough
])
async def test_text_mode_fallback(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any, profile: str,
                                  options: str, state: str, first_octet: int) -> None:
    modem = modem_factory(profile=profile, pdu_mode=False)
    daemon = gateway(daemon_factory, tmp_path, modem, options)
    async with aiohttp.ClientSession() as session:
        sent = await final(session, daemon, await send(session, daemon, "+36201234567", "Plain text mode"))
        refused = await final(session, daemon, await send(session, daemon, "+36201234567", "Unicode ő"))
    assert sent["state"] == state and modem.submits == [{"number": "+36201234567", "text": "Plain text mode"}]
    assert refused["state"] == "rejected" and refused["error_code"] == "TEXT_MODE"
    assert "AT+CMGF=1" in modem.commands and "has no PDU mode" in daemon.output()
    assert f"AT+CSMP={first_octet},167,0,0" in modem.commands


# The second AT implementation of issue 18 (no AT+CMEE, a quoted +CPIN answer, a bare `>` prompt, never a
# status report): told so with receipts=no, or refusing AT+CNMI with status reports, which says it.
@pytest.mark.parametrize(("profile", "options", "detected"), [("second", "&receipts=no", False),
                                                              ("second_no_ds", "", True)])
async def test_a_modem_without_status_reports(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any,
                                              profile: str, options: str, detected: bool) -> None:
    modem = modem_factory(profile=profile, pin="1234")
    # A message waiting for a report would expire after the receipt timeout: it ends at once instead.
    daemon = gateway(daemon_factory, tmp_path, modem, f"&pin=1234{options}",
                     extra="[messages]\nreceipt_timeout = 1")
    long_text = "Köszönjük a rendelést! Szállítás holnap 😀 " * 3
    async with aiohttp.ClientSession() as session:
        ids = [await send(session, daemon, "+36201234567", "no report [please]"),
               await send(session, daemon, "+36207654321", long_text)]
        results = [await final(session, daemon, sms_id, timeout=10) for sms_id in ids]
    assert [m["state"] for m in results] == ["sent"] * 2, results
    assert 'AT+CPIN="1234"' in modem.commands and results[1]["part_count"] == len(modem.submits) - 1 > 1
    assert not any(p["status_report"] for p in modem.submits)
    assert CNMI_NO_REPORTS in modem.commands and (CNMI_REPORTS in modem.commands) is detected
    output = daemon.output()
    assert output.count("modem gsm gives no status reports") == detected
    assert output.count("modem gsm: AT+CMEE=1 refused (ERROR): its refusals will not say why") == 1



async def test_what_a_modem_lacks_is_logged_once_not_at_every_reopen(daemon_factory: list[Daemon], tmp_path: Path,
                                                                     modem_factory: Any) -> None:
    modem = modem_factory(profile="second_no_ds", silent_after=7, silent_for=2.5)  # quiet right after init
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        data = await final(session, daemon, await send(session, daemon, "+36201234567", "after the reset"))
    assert data["state"] == "sent" and modem.commands.count(CNMI_NO_REPORTS) >= 2
    output = daemon.output()
    assert "stopped answering" in output or "no answer" in output
    assert output.count("modem gsm gives no status reports") == output.count("AT+CMEE=1 refused") == 1

async def test_a_validity_period_reaches_the_modem_as_tp_vp(daemon_factory: list[Daemon], tmp_path: Path,
                                                             modem_factory: Any) -> None:
    modem = modem_factory()
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        assert (await ozeki_send(session, daemon, "+36201111111", ValidityPeriod="600"))[0] == "200"
        assert (await ozeki_send(session, daemon, "+36202222222"))[0] == "200"
        deadline = time.monotonic() + 30
        while len(modem.submits) < 2:
            assert time.monotonic() < deadline, modem.submits
            await asyncio.sleep(0.1)
    validity = {submit["number"]: (submit["tp_vpf"], submit["tp_vp"]) for submit in modem.submits}
    # What is left of 600 seconds when the part leaves, rounded up to the coding's next step: 10 minutes.
    assert validity["+36201111111"] == ("relative", 1)
    assert validity["+36202222222"] == ("none", None)  # none asked for: the PDU as before, the SMSC's own


def ask(fd: int, line: str, end: bytes = b"\r") -> str:
    """One command (or PDU) to the emulator over its terminal; its final result or its prompt."""
    os.write(fd, line.encode() + end)
    answer, deadline = b"", time.monotonic() + 5
    while not answer.rstrip(b"\r\n").endswith((b"OK", b"ERROR", b">", b"> ")) \
            and not (b"ERROR:" in answer and answer.endswith(b"\r\n")):
        assert time.monotonic() < deadline, (line, answer)
        if select.select([fd], [], [], 0.1)[0]:
            answer += os.read(fd, 4096)
    return answer.decode().strip("\r\n").rsplit("\r\n", 1)[-1]


MALFORMED = ["AT+CNMI=2,1", "AT+CNMI=2,1,0,3,0", "AT+CNMI=2,1,0,1,0,0", "AT+CSCS=GSM", 'AT+CSCS="KLINGON"',
             "AT+CMEE=5", "AT+CSMP=49", "AT+CPIN=12", 'AT+CSCA="SMSC"', "AT+CMGR=x", "AT+CMGD=", "AT+CMGS=abc",
             'AT+CMGS="+3620"', "AT+CMGF=2", "AT+UNKNOWN"]


# SMS-SUBMIT to +36201234567 of "hi" with TP-SRR, TP-VPF relative and TP-VP 10 minutes (GSM 03.40 9.2.2.2).
VALID_SUBMIT = "31" "00" "0B916302214365F7" "00" "00" "01" "02" "E834"
# As long as AT+CMGS says, but their fields do not add up: a TP-VPF announcing a TP-VP that is not there, or a
# TP-VP without its TP-VPF; an enhanced TP-VP one octet short; a TP-UDL beyond the data; an SMS-DELIVER.
MALFORMED_SUBMITS = [(15, "31" "00" "0B916302214365F7" "00" "00" "02" "E834"),
                     (16, "21" "00" "0B916302214365F7" "00" "00" "01" "02" "E834"),
                     (21, "29" "00" "0B916302214365F7" "00" "00" "010000000000" "02" "E834"),
                     (16, "31" "00" "0B916302214365F7" "00" "00" "01" "09" "E834"),
                     (16, "30" "00" "0B916302214365F7" "00" "00" "01" "02" "E834")]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_emulator_refuses_what_a_modem_refuses(modem_factory: Any, profile: str) -> None:
    modem = modem_factory(profile=profile, echo=False)
    fd = os.open(modem.path, os.O_RDWR | os.O_NOCTTY)
    try:
        assert [ask(fd, line) for line in MALFORMED] == ["ERROR"] * len(MALFORMED)
        routes_reports = ask(fd, CNMI_REPORTS)
        assert ask(fd, CNMI_NO_REPORTS) == "OK"
        assert ask(fd, "AT+CMGS=9") == PROFILES[profile].prompt
        assert ask(fd, "0001", b"\x1a") == "+CMS ERROR: 304"  # a PDU shorter than AT+CMGS said
        for length, tpdu in MALFORMED_SUBMITS:
            assert ask(fd, f"AT+CMGS={length}") == PROFILES[profile].prompt
            assert ask(fd, "00" + tpdu, b"\x1a") == "+CMS ERROR: 304", tpdu
        assert ask(fd, "AT+CMGS=16") == PROFILES[profile].prompt
        assert ask(fd, "00" + VALID_SUBMIT, b"\x1a") == "OK"
    finally:
        os.close(fd)
    assert routes_reports == ("ERROR" if profile == "second_no_ds" else "OK")
