"""Sending policy in the real daemon against the npm SMSC: a scheduled message leaves at its SendAt, across a
kill -9 and restart; a cancelled one never leaves and its sender hears `Cancelled`; quotas refuse with Ozeki 306
naming the quota and its reset; bulk waits outside [policy] bulk_hours while a caller's message does not;
bad SendAt values and limits are refused naming the parameter or key, and nothing is stored."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp

from asterisk_sendsms.core.passwords import hash_password

from .conftest import Daemon, Receiver, Smsc, basic_auth, gateway_config, start_daemon
from .test_e2e_api import run_cli
from .test_e2e_traffic import BOB, ozeki_send, submitted
from .waits import wait_dispatched, wait_held

PW = hash_password("pw")


# Messages of the normal class sent one after another, each its own claim.
LATER = ("+36207777777", "+36208888888", "+36209999999")


def gateway(daemon_factory: list[Daemon], tmp_path: Path, smsc: Smsc, extra: str = "",
            options: str = "&window=10") -> Daemon:
    url = f"smpp://esme:secret@127.0.0.1:{smsc.port}?enquire_link=1{options}"
    return start_daemon(daemon_factory, tmp_path / "data", "--config",
                        str(gateway_config(tmp_path / "smpp.toml", url, extra + BOB)))


async def arrival(smsc: Smsc, recipient: str, timeout: float = 20.0) -> float:
    """When the SMSC got the submit for `recipient` (looked at every 20 ms)."""
    deadline = time.monotonic() + timeout
    while recipient.lstrip("+") not in submitted(smsc):
        assert time.monotonic() < deadline, f"{recipient} never reached the SMSC: {submitted(smsc)}"
        await asyncio.sleep(0.02)
    return time.time()


async def test_a_scheduled_message_leaves_at_its_time_across_a_kill9_and_a_cancelled_one_never(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any, receiver: Receiver) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc)
    send_at = time.time() + 8
    in_budapest = datetime.fromtimestamp(send_at, timezone(timedelta(hours=1))).isoformat()
    async with aiohttp.ClientSession() as session:
        code, _ = await ozeki_send(session, daemon, "+36201111111", SendAt=in_budapest)
        assert code == "200"
        code, _ = await ozeki_send(session, daemon, "+36202222222", SendAt=str(int(send_at)),
                                   DeliveryReportURL=receiver.url)
        assert code == "200"
        async with session.post(f"{daemon.base}/api/messages", headers=basic_auth("alice", "pw"),
                                json={"recipient": "+36203333333", "text": "later", "send_at": f"{send_at:.3f}",
                                      "delivery_report_url": receiver.url}) as r:
            assert r.status == 201
            by_cli = (await r.json())["sms_id"]
        async with session.get(f"{daemon.base}/api/messages?state=scheduled",
                               headers=basic_auth("alice", "pw")) as r:
            scheduled = {m["recipient"]: m for m in await r.json()}
        assert set(scheduled) == {"+36201111111", "+36202222222", "+36203333333"}
        assert abs(scheduled["+36201111111"]["send_at"] - send_at) < 0.001
        # Cancelled over HTTP by its sender, and with the CLI.
        cancelled = scheduled["+36202222222"]["sms_id"]
        async with session.delete(f"{daemon.base}/api/messages/{cancelled}", headers=basic_auth("bob", "pw")) as r:
            assert r.status == 404  # not bob's
        async with session.delete(f"{daemon.base}/api/messages/{cancelled}", headers=basic_auth("alice", "pw")) as r:
            assert r.status == 200 and (await r.json())["state"] == "cancelled"
        async with session.delete(f"{daemon.base}/api/messages/{cancelled}", headers=basic_auth("alice", "pw")) as r:
            assert r.status == 409 and "cancelled" in (await r.json())["error"]
        result = await asyncio.to_thread(run_cli, "cancel", by_cli, data_dir=daemon.data_dir)
        assert result.returncode == 0 and result.stdout.split() == [by_cli, "cancelled"], result.stderr
        posts = await receiver.wait_for(2)
        assert {(p["SmsId"], p["DeliveryStatus"]) for p in posts} == {(cancelled, "Cancelled"),
                                                                     (by_cli, "Cancelled")}
        listed = await asyncio.to_thread(run_cli, "messages", "--scheduled", data_dir=daemon.data_dir)
        assert listed.returncode == 0 and "+36201111111" in listed.stdout and "+36202222222" not in listed.stdout
    daemon.kill9()  # before its time: the schedule is in the store, not in memory
    daemon.start()
    left_at = await arrival(smsc, "+36201111111")
    print(f"\nscheduled message left {left_at - send_at:+.2f} s from its SendAt (across a kill -9)")
    assert send_at - 0.05 <= left_at <= send_at + 1.0
    async with aiohttp.ClientSession() as session:
        await wait_dispatched(session, daemon)  # nothing else can leave now
    assert submitted(smsc) == ["36201111111"]  # the cancelled ones never left


async def test_a_scheduled_callers_message_leaves_on_time_behind_a_full_pipeline(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any) -> None:
    smsc = smsc_factory()
    # 20/s through a window of 1: the pipeline (window + 256) stays full of bulk for the whole test, and frees
    # room for another claim only every 64 messages (3.2 s).
    daemon = gateway(daemon_factory, tmp_path, smsc, options="&window=1&throughput=20")
    async with aiohttp.ClientSession() as session:
        for start in range(0, 600, 50):
            codes = await asyncio.gather(*(ozeki_send(session, daemon, f"+3620{n:07d}", "bulk")
                                           for n in range(start, start + 50)))
            assert {code for code, _ in codes} == {"200"}
        await smsc.wait_for(lambda: len(smsc.submits()) >= 5)
        send_at = time.time() + 3
        code, _ = await ozeki_send(session, daemon, "+36309999999", "interactive", SendAt=f"{send_at:.3f}")
        assert code == "200"
        left_at = await arrival(smsc, "+36309999999")
    print(f"\nscheduled interactive message left {left_at - send_at:+.2f} s from its SendAt behind 600 bulk")
    assert send_at - 0.05 <= left_at <= send_at + 1.0


async def test_quotas_refuse_with_306_naming_the_quota_and_its_reset(daemon_factory: list[Daemon], tmp_path: Path,
                                                                      smsc_factory: Any) -> None:
    smsc = smsc_factory()
    carol = (f'[policy]\ntimezone = "Europe/Budapest"\n'
             f'[[users]]\nname = "carol"\npassword_hash = "{PW}"\ndaily_quota = 3\n')
    daemon = gateway(daemon_factory, tmp_path, smsc, carol)
    long_text = "x" * 200  # two parts
    async with aiohttp.ClientSession() as session:
        assert (await ozeki_send(session, daemon, "+36201111111", user="carol", Message=long_text))[0] == "200"
        code, text = await ozeki_send(session, daemon, "+36202222222", user="carol", Message=long_text)
        tomorrow = (datetime.now(UTC).astimezone(timezone(timedelta(hours=1))).date() + timedelta(days=1))
        assert code == "306" and "daily quota of 3 message parts" in text and str(tomorrow) in text, text
        assert (await ozeki_send(session, daemon, "+36203333333", user="carol"))[0] == "200"  # one part fits
        assert (await ozeki_send(session, daemon, "+36204444444", user="carol"))[0] == "306"
        assert (await ozeki_send(session, daemon, "+36205555555"))[0] == "200"  # alice has no quota
        async with session.get(f"{daemon.base}/metrics", headers=basic_auth("ops", "pw")) as r:
            metrics = await r.text()
        async with session.get(f"{daemon.base}/api/messages", headers=basic_auth("ops", "pw")) as r:
            stored = {m["recipient"] for m in await r.json()}
    assert 'sendsms_quota_used_parts{user="carol",period="daily"} 3' in metrics
    assert 'sendsms_quota_parts{user="carol",period="daily"} 3' in metrics
    assert stored == {"+36201111111", "+36203333333", "+36205555555"}  # nothing refused was stored


async def test_bulk_waits_outside_its_hours_and_a_caller_does_not(daemon_factory: list[Daemon], tmp_path: Path,
                                                                   smsc_factory: Any) -> None:
    smsc = smsc_factory()
    now = datetime.now(UTC)
    # A window that closed an hour ago and opens in an hour (UTC), whatever the time of day the test runs at.
    opens, closes = (now + timedelta(hours=1)).strftime("%H:00"), (now - timedelta(hours=1)).strftime("%H:00")
    daemon = gateway(daemon_factory, tmp_path, smsc, f'[policy]\nbulk_hours = "{opens}-{closes}"\n')
    async with aiohttp.ClientSession() as session:
        assert (await ozeki_send(session, daemon, "+36201111111", "bulk"))[0] == "200"
        assert (await ozeki_send(session, daemon, "+36202222222", "interactive"))[0] == "200"
        assert (await ozeki_send(session, daemon, "+36203333333"))[0] == "200"
        await smsc.wait_for(lambda: len(smsc.submits()) >= 2)
        for later in LATER:  # several claims later, each of which took one of these, the bulk one still waits
            assert (await ozeki_send(session, daemon, later))[0] == "200"
            await arrival(smsc, later)
        async with session.get(f"{daemon.base}/metrics", headers=basic_auth("ops", "pw")) as r:
            metrics = await r.text()
    assert sorted(submitted(smsc)) == ["36202222222", "36203333333", *(n.lstrip("+") for n in LATER)]
    assert 'sendsms_class_queue_depth{priority="bulk"} 1' in metrics
    listed = await asyncio.to_thread(run_cli, "messages", "--priority", "bulk", data_dir=daemon.data_dir)
    assert listed.returncode == 0 and "+36201111111" in listed.stdout and "+36202222222" not in listed.stdout
    assert " bulk " in listed.stdout


async def test_bad_send_at_and_limits_are_refused_by_name_and_nothing_is_stored(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any) -> None:
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc)
    async with aiohttp.ClientSession() as session:
        for bad in ("tomorrow", "2026-12-03", "2026-12-03T18:00:00", str(int(time.time() - 3600)),
                    str(int(time.time() + 40 * 86400)), "1e10", "\x00", "9" * 5000):
            code, text = await ozeki_send(session, daemon, "+36201111111", SendAt=bad)
            assert code == "302" and "'SendAt'" in text, (bad, text)
        async with session.post(f"{daemon.base}/api/messages", headers=basic_auth("alice", "pw"),
                                json={"recipient": "+36201111111", "text": "x", "send_at": "yesterday"}) as r:
            assert r.status == 400 and "'send_at'" in (await r.json())["error"]
        async with session.get(f"{daemon.base}/api/messages", headers=basic_auth("ops", "pw")) as r:
            assert await r.json() == []
    for key, value in (("daily_quota", "-1"), ("monthly_quota", "1.5"), ("max_rate", "0"),
                       ("max_rate", '"fast"')):
        config = tmp_path / f"{key}.toml"
        config.write_text(f'[[users]]\nname = "u"\npassword_hash = "{PW}"\n{key} = {value}\n'
                          '[[transports]]\nurl = "simulator"\n')
        result = subprocess.run([sys.executable, "-m", "asterisk_sendsms", "check-config", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0 and f"users[0].{key}" in result.stderr, (key, result.stderr)
        assert "Traceback" not in result.stderr
    for key, value in (("timezone", '"Mars/Olympus"'), ("bulk_hours", '"8-20"'), ("schedule_horizon", '"-1"')):
        config = tmp_path / f"{key}.toml"
        config.write_text(f'[policy]\n{key} = {value}\n[[transports]]\nurl = "simulator"\n')
        result = subprocess.run([sys.executable, "-m", "asterisk_sendsms", "check-config", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0 and f"policy.{key}" in result.stderr, (key, result.stderr)


def test_a_horizon_beyond_what_dates_hold_is_refused_by_name(tmp_path: Path) -> None:
    # Accepted, these let a SendAt in the year 33658 in: its message could then not be shown (a 500 and a
    # traceback for its status, the status page and `messages`).
    for value in ("nan", "inf", '"100000000h"', "1e300", '"3661d"'):
        config = tmp_path / "horizon.toml"
        config.write_text(f'[policy]\nschedule_horizon = {value}\n[[transports]]\nurl = "simulator"\n')
        result = subprocess.run([sys.executable, "-m", "asterisk_sendsms", "check-config", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0 and "policy.schedule_horizon" in result.stderr, (value, result.stderr)
        assert "Traceback" not in result.stderr


async def test_a_send_at_that_is_not_a_string_is_refused_naming_the_field(daemon_factory: list[Daemon],
                                                                          tmp_path: Path) -> None:
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config",
                          str(gateway_config(tmp_path / "g.toml", "simulator")))
    async with aiohttp.ClientSession() as session:
        for bad in (int(time.time()) + 60, 1e308, True, [], {}, 0):
            for field in ("send_at", "validity_period"):
                async with session.post(f"{daemon.base}/api/messages", headers=basic_auth("alice", "pw"),
                                        json={"recipient": "+36201111111", "text": "x", field: bad}) as r:
                    error = (await r.json())["error"]
                    assert r.status == 400 and f"'{field}'" in error, (field, bad, error)
        async with session.get(f"{daemon.base}/api/messages", headers=basic_auth("ops", "pw")) as r:
            assert await r.json() == []
    assert "Traceback" not in daemon.output()


async def test_a_message_held_by_its_transport_past_its_lease_cannot_be_cancelled(
        daemon_factory: list[Daemon], tmp_path: Path, smsc_factory: Any) -> None:
    # 320 messages through a window of 1 at 40/s: the dispatcher holds (claimed, handed to the transport) more
    # than the pacer lets out within the 2 s lease. A cancel of one of them must be refused (409): had it been
    # cancelled, the transport would still submit it, and the SMSC would have a message the store calls
    # cancelled.
    smsc = smsc_factory()
    daemon = gateway(daemon_factory, tmp_path, smsc, options="&window=1&throughput=40")
    daemon.stop()
    config = Path(daemon.args[-1])
    config.write_text(config.read_text().replace("lease = 120.0", "lease = 2"))
    daemon.start()
    async with aiohttp.ClientSession() as session:
        codes = await asyncio.gather(*[ozeki_send(session, daemon, f"+3620111{i:04d}") for i in range(320)])
        assert all(code == "200" for code, _ in codes)
        await wait_held(session, daemon, 2.5)  # claimed, and held by the transport past the 2 s lease
        async with session.get(f"{daemon.base}/api/messages?limit=1000&state=queued",
                               headers=basic_auth("alice", "pw")) as r:
            queued = await r.json()

        async def cancel(sms_id: str) -> int:
            async with session.delete(f"{daemon.base}/api/messages/{sms_id}", headers=basic_auth("alice", "pw")) as r:
                return r.status

        assert set(await asyncio.gather(*[cancel(m["sms_id"]) for m in queued])) <= {200, 409}
        deadline = time.monotonic() + 40
        while True:
            async with session.get(f"{daemon.base}/api/messages?limit=1000", headers=basic_auth("alice", "pw")) as r:
                states = {m["recipient"].lstrip("+"): m["state"] for m in await r.json()}
            if all(state in ("delivered", "cancelled") for state in states.values()):
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.5)
        await wait_dispatched(session, daemon)  # no submit is on its way
    at_smsc = set(submitted(smsc))
    assert len(submitted(smsc)) == len(at_smsc), "a message was submitted twice"
    assert not [number for number, state in states.items() if state == "cancelled" and number in at_smsc]
    assert {number for number, state in states.items() if state == "delivered"} == at_smsc
    assert "Traceback" not in daemon.output()


def test_cancel_and_status_of_what_is_not_an_sms_id_say_so_in_one_line(daemon_factory: list[Daemon],
                                                                          tmp_path: Path) -> None:
    # Put in the path as they were, '' and '..' made other requests (DELETE /api/messages/, /api/), answered in
    # text: "cannot talk to the daemon ...: Expecting value: line 1 column 1".
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--transport", "simulator")
    for command in ("cancel", "status"):
        for bad in ("", ".", "..", "a/b", "../../metrics", "x" * 10000, "\n\x1b[31m"):
            result = run_cli(command, bad, data_dir=daemon.data_dir)
            assert result.returncode != 0 and result.stdout == "", (command, bad, result)
            assert result.stderr.count("\n") == 1 and "is not an SmsId" in result.stderr, (command, bad, result)
            assert "\x1b" not in result.stderr
