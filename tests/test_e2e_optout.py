"""Opt-out in the running daemon: a phone texts STOP through the npm SMSC (a real deliver_sm) and the gateway
refuses what it may no longer send it, on every API; START; the list kept by an operator (CLI, /api/optouts,
admins only), `send --csv` going on past refused rows, the count in /metrics and on the status page."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
from lxml import etree

from .conftest import RUN, Daemon, Smsc, basic_auth, gateway_config, start_daemon

PHONE = "+36201234567"
ALICE = basic_auth("alice", "pw")
OPS = basic_auth("ops", "pw")


async def ozeki(session: aiohttp.ClientSession, daemon: Daemon, recipient: str = PHONE, **extra: str
                ) -> tuple[str, str]:
    """(Code, Message) of the Ozeki reply to alice's SendSms."""
    form = {"Command": "SendSms", "Username": "alice", "Password": "pw", "Recipient": recipient, "Message": "Hi",
            **extra}
    async with session.post(f"{daemon.base}/api", data=form) as response:
        root = etree.fromstring(await response.read())
    return root.findtext("Code") or "", root.findtext("Message") or ""


async def optouts(session: aiohttp.ClientSession, daemon: Daemon) -> list[dict[str, Any]]:
    async with session.get(f"{daemon.base}/api/optouts", headers=OPS) as response:
        assert response.status == 200, await response.text()
        listed: list[dict[str, Any]] = await response.json()
        return listed


async def until_listed(session: aiohttp.ClientSession, daemon: Daemon, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while len(listed := await optouts(session, daemon)) != count:
        assert time.monotonic() < deadline, f"opt-out list {listed}\n{daemon.output()}"
        await asyncio.sleep(0.1)
    return listed


async def stored_for(session: aiohttp.ClientSession, daemon: Daemon, recipient: str) -> list[dict[str, Any]]:
    async with session.get(f"{daemon.base}/api/messages", params={"recipient": recipient}, headers=OPS) as response:
        found: list[dict[str, Any]] = await response.json()
        return found


async def test_stop_by_a_real_deliver_sm_refuses_then_start_allows(daemon_factory: list[Daemon], tmp_path: Path,
                                                                   smsc_factory: Any) -> None:
    smsc: Smsc = smsc_factory()
    url = f"smpp://esme:secret@127.0.0.1:{smsc.port}?window=10&enquire_link=1"
    config = gateway_config(tmp_path / "smpp.toml", url, '[optout]\nscope = "sender"\n')
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))
    await smsc.wait_for(lambda: any(e["event"] == "bind" and e["ok"] for e in smsc.events))
    async with aiohttp.ClientSession() as session:
        smsc.deliver(PHONE[1:], "1234", " stop ")
        [entry] = await until_listed(session, daemon, 1)
        assert (entry["number"], entry["sender"], entry["source"]) == (PHONE, "1234", "keyword")
        assert await ozeki(session, daemon, Sender="1234") == ("306", f"recipient opted out: {PHONE}")
        assert await ozeki(session, daemon, Sender="1234", Priority="bulk") == (
            "306", f"recipient opted out: {PHONE}")
        async with session.post(f"{daemon.base}/api/messages", headers=ALICE,
                                json={"recipient": PHONE, "text": "Hi", "sender": "1234"}) as response:
            assert response.status == 403
            assert await response.json() == {"code": 306, "error": f"recipient opted out: {PHONE}"}
        assert await stored_for(session, daemon, PHONE) == []  # nothing of the refused ones
        code, _ = await ozeki(session, daemon, Sender="1234", Priority="interactive")
        assert code == "200"  # the caller on the line asked for it
        assert (await ozeki(session, daemon, Sender="ACME"))[0] == "200"  # the STOP went to 1234 only
        smsc.deliver(PHONE[1:], "1234", "START")
        await until_listed(session, daemon, 0)
        assert (await ozeki(session, daemon, Sender="1234"))[0] == "200"
        assert len(await stored_for(session, daemon, PHONE)) == 3
    await smsc.wait_for(lambda: len(smsc.submits()) == 3)
    incoming = [e for e in smsc.events if e["event"] == "mo_resp"]
    assert [e["status"] for e in incoming] == [0, 0]  # the STOP and START themselves were taken as ever
    output = daemon.output()
    assert output.count(f"{PHONE} opted out (' stop ' to 1234 via operator) for sender 1234") == 1, output
    assert output.count(f"{PHONE} opted back in ('START' to 1234 via operator) for sender 1234") == 1, output


def run_cli(*args: str, data_dir: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUN), *args, "--config", str(config), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, check=False)


async def test_the_list_kept_by_operators_and_admins(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = gateway_config(tmp_path / "gateway.toml", "simulator?receipt_delay=0.1")
    daemon = start_daemon(daemon_factory, data_dir, "--config", str(config))
    added = run_cli("optout", "add", "+36 20 111 1111", data_dir=data_dir, config=config)
    assert (added.returncode, added.stdout) == (0, "+36 20 111 1111: added\n"), added.stderr
    again = run_cli("optout", "add", "+36201111111", data_dir=data_dir, config=config)
    assert again.stdout == "+36201111111: already on the list\n"
    bad = run_cli("optout", "add", "nobody", data_dir=data_dir, config=config)
    assert bad.returncode == 1 and bad.stderr.startswith("asterisk-sendsms: Missing or invalid parameter 'number'")
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "POST", "DELETE"):
            async with session.request(method, f"{daemon.base}/api/optouts", headers=ALICE,
                                       params={"number": "+36202222222"}, json={"number": "+36202222222"}) as r:
                assert r.status == 403, method
                assert (await r.json())["error"] == "Forbidden user: alice is not an admin (admin = true)"
            async with session.request(method, f"{daemon.base}/api/optouts") as r:
                assert r.status == 401, method
        async with session.post(f"{daemon.base}/api/optouts", headers=OPS,
                                json={"number": "+36202222222", "sender": "ACME"}) as r:
            assert (r.status, await r.json()) == (201, {"added": True})
        listed = await optouts(session, daemon)
        assert [(o["number"], o["sender"], o["source"]) for o in listed] == [
            ("+36202222222", "ACME", "api"), ("+36201111111", None, "cli")]
        async with session.get(f"{daemon.base}/metrics", headers=OPS) as r:
            assert "\nsendsms_optouts 2\n" in await r.text()
        async with session.get(f"{daemon.base}/status", headers=OPS) as r:
            assert "<b>2</b>opted out" in await r.text()
    rows = tmp_path / "campaign.csv"
    rows.write_text("number,text\n+36203333333,one\n+36201111111,two\n+36202222222,three\n", encoding="utf-8")
    sent = subprocess.run([str(RUN), "send", "--csv", str(rows), "--rate", "50", "--from", "ACME", "--config",
                           str(config), "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert sent.returncode == 1  # some rows were refused, the others sent
    assert sent.stdout.splitlines()[:2] == ["line 3: +36201111111: recipient opted out: +36201111111",
                                            "line 4: +36202222222: recipient opted out: +36202222222"]
    assert "accepted   1" in sent.stdout and "refused    2" in sent.stdout
    shown = run_cli("optout", "list", "--json", data_dir=data_dir, config=config)
    assert [o["number"] for o in json.loads(shown.stdout)] == ["+36202222222", "+36201111111"]
    removed = run_cli("optout", "remove", "+36202222222", "--sender", "ACME", data_dir=data_dir, config=config)
    assert removed.stdout == "+36202222222: removed\n", removed.stderr
    missing = run_cli("optout", "remove", "+36202222222", data_dir=data_dir, config=config)
    assert missing.stdout == "+36202222222: was not on the list\n"
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{daemon.base}/api/optouts", headers=OPS,
                                  params={"number": "+36201111111"}) as r:
            assert (r.status, await r.json()) == (200, {"removed": True})
    table = run_cli("optout", "list", data_dir=data_dir, config=config)
    assert table.returncode == 0 and table.stdout.splitlines() == [
        f"{'since':<23}  {'number':<16}  {'sender':<16}  source"]


async def test_http_front_workers_commit_through_the_same_check(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    """Workers validate in their own processes; the daemon's commit looks the opt-outs up."""
    data_dir = tmp_path / "data"
    config = gateway_config(tmp_path / "gateway.toml", "simulator", "[http]\nworkers = 1\n")
    daemon = start_daemon(daemon_factory, data_dir, "--config", str(config))
    assert run_cli("optout", "add", PHONE, data_dir=data_dir, config=config).returncode == 0
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # whichever process takes the connection
            assert await ozeki(session, daemon) == ("306", f"recipient opted out: {PHONE}")
        assert (await ozeki(session, daemon, recipient="+36209999999"))[0] == "200"
        assert await stored_for(session, daemon, PHONE) == []


async def test_hostile_input_to_the_list_is_refused_by_name_and_the_daemon_stays_up(
        daemon_factory: list[Daemon], tmp_path: Path) -> None:
    config = gateway_config(tmp_path / "gateway.toml", "simulator?receipt_delay=0.1")
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))
    url = f"{daemon.base}/api/optouts"
    async with aiohttp.ClientSession() as session:
        for body in (b"not json", b"[]", b'"+36201111111"', b"{" * 5000, b'{"number": 36201111111}',
                     b'{"number": ["+36201111111"]}', b'{"number": "+36201111111", "sender": 1234}',
                     b'{"number": "+3620\\u0000111"}', b'{"number": "' + b"9" * 10_000 + b'"}',
                     b'{"number": "nobody\\r\\n2026-12-03 INFO forged"}', b'{"number": "+36201111111", "sender": "'
                     + b"A" * 5000 + b'"}', b'{"number": ""}'):
            async with session.post(url, headers={**OPS, "Content-Type": "application/json"}, data=body) as r:
                answer = await r.json()
                assert r.status == 400 and answer["code"] in (300, 302), (body[:60], answer)
        for params in ({"number": "x" * 10_000}, {"number": "+36\x00201"}, {"number": ""}, {}):
            async with session.delete(url, headers=OPS, params=params) as r:
                assert r.status == 400 and "'number'" in (await r.json())["error"], params
        for limit in ("-1", "0", "1e9", "10000000000", "NaN", "１０"):
            async with session.get(url, headers=OPS, params={"limit": limit}) as r:
                assert r.status == 400 and "'limit'" in (await r.json())["error"], limit
        assert await optouts(session, daemon) == []  # nothing was added
        async with session.get(f"{daemon.base}/healthz") as r:
            assert r.status == 200
    assert "Traceback" not in daemon.output() and "forged" not in daemon.output()
