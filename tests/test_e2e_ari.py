"""End to end over ARI: the daemon's listener against the fake ARI server (REST + websocket), the fake first
checked against the recorded exchange."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from asterisk_sendsms.core.passwords import hash_password

from .conftest import Daemon, basic_auth, free_port, get_status, start_daemon
from .peers.fake_ari import FakeAri, FakeAriChannel
from .test_agi_protocol import FIXTURES, write_wav


@pytest.fixture
async def ari(tmp_path: Path) -> AsyncIterator[FakeAri]:
    fake = FakeAri(tmp_path / "sounds")
    await fake.start(free_port())
    yield fake
    await fake.stop()


def ari_daemon(daemon_factory: list[Daemon], tmp_path: Path, ari: FakeAri, password: str = "ari-secret") -> Daemon:
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[speech]
cache_dir = "{tmp_path / 'tts'}"
[[users]]
name = "viewer"
password_hash = "{hash_password('viewer-secret')}"
admin = true
[[transports]]
url = "simulator?receipt_delay=0.2"
""")
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config), "--ari",
                        f"http://asterisk:{password}@127.0.0.1:{ari.port}?app=sendsms")


async def finished(channel: FakeAriChannel, timeout: float = 20.0) -> FakeAriChannel:
    deadline = time.monotonic() + timeout
    while not channel.gone:
        assert time.monotonic() < deadline, f"channel still in the application: {channel.requests}"
        await asyncio.sleep(0.05)
    return channel


async def test_fake_ari_answers_as_recorded(ari: FakeAri) -> None:
    """The REST replies of the recording, from the fake."""
    recorded = [line for line in (FIXTURES / "ari-stasis.txt").read_text().splitlines() if line.startswith(">>")]
    assert any("/answer  -> 204" in line for line in recorded)
    assert any('-> 404 {"message":"Channel not found"}' in line for line in recorded)
    channel = await ari.call("+15557654321", "Hello via ARI")
    write_wav(ari.sounds_dir / "tts8k.wav", 37910)
    base = f"http://127.0.0.1:{ari.port}/ari/channels"
    headers = {"Authorization": ari.credentials}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{base}/{channel.id}/answer") as r:
            assert r.status == 204
        async with session.post(f"{base}/{channel.id}/variable", params={"variable": "SMS_ID", "value": "abc"}) as r:
            assert r.status == 204
        async with session.get(f"{base}/{channel.id}/variable", params={"variable": "SMS_ID"}) as r:
            assert (r.status, await r.json()) == (200, {"value": "abc"})
        async with session.post(f"{base}/{channel.id}/play", params={"media": "sound:tts8k"}) as r:
            body = await r.json()
            assert r.status == 201 and body["state"] == "queued" and body["target_uri"] == f"channel:{channel.id}"
        async with session.delete(f"{base}/{channel.id}") as r:
            assert r.status == 204
        async with session.delete(f"{base}/nonexistent-id") as r:
            assert (r.status, await r.text()) == (404, json.dumps({"message": "Channel not found"}))
    async with aiohttp.ClientSession() as session, session.post(f"{base}/{channel.id}/answer") as r:
        assert r.status == 401  # no credentials


async def test_stasis_call_sends_speaks_and_continues(daemon_factory: list[Daemon], tmp_path: Path,
                                                      ari: FakeAri) -> None:
    daemon = ari_daemon(daemon_factory, tmp_path, ari)
    await ari.wait_connected()
    channel = await finished(await ari.call("+15557654321", "Hello via ARI"))
    assert channel.requests[:2] == ["answer", "play"]
    assert channel.requests[-1] == "continue" and channel.continued  # back to the dialplan
    assert channel.variables["SMS_STATUS"] == "SENT" and channel.variables["SMS_ERROR"] == ""
    assert [state for _, state in channel.played] == ["done", "done"]
    assert all(media.startswith(f"sound:{tmp_path / 'tts'}/") for media, _ in channel.played)
    async with aiohttp.ClientSession() as session:
        message = await get_status(session, daemon, channel.variables["SMS_ID"], "viewer", "viewer-secret")
    assert (message["recipient"], message["text"]) == ("+15557654321", "Hello via ARI")


async def test_options_hangup_and_wait_for_delivery(daemon_factory: list[Daemon], tmp_path: Path,
                                                    ari: FakeAri) -> None:
    ari_daemon(daemon_factory, tmp_path, ari)
    await ari.wait_connected()
    channel = await finished(await ari.call("+15557654321", "Code 4711", "wait=delivered&hangup=yes&announce=no"))
    assert channel.requests == ["variable", "variable", "variable", "hangup"]
    assert channel.variables["SMS_STATUS"] == "DELIVERED" and not channel.continued


async def test_other_channels_are_left_alone(daemon_factory: list[Daemon], tmp_path: Path, ari: FakeAri) -> None:
    ari_daemon(daemon_factory, tmp_path, ari)
    await ari.wait_connected()
    other_half = await ari.call("dialed")  # the second half of a Local channel originated into the app
    checked = await finished(await ari.call("+15557654321", "hi", "announce=no"))
    assert checked.variables["SMS_STATUS"] == "SENT"
    assert other_half.requests == [] and not other_half.gone


async def test_caller_hangs_up_midway_and_the_sms_still_goes(daemon_factory: list[Daemon], tmp_path: Path,
                                                            ari: FakeAri) -> None:
    ari.playback_speed = 1.0  # real-time prompts: the caller leaves during the first
    daemon = ari_daemon(daemon_factory, tmp_path, ari)
    await ari.wait_connected()
    channel = await ari.call("+15550001111", "Your order has shipped")
    deadline = time.monotonic() + 15
    while "play" not in channel.requests:
        assert time.monotonic() < deadline, channel.requests
        await asyncio.sleep(0.02)
    await ari.caller_hangs_up(channel)
    deadline = time.monotonic() + 15
    while "SendSms to +15550001111 on a call: SENT" not in daemon.output():
        assert time.monotonic() < deadline, daemon.output()
        await asyncio.sleep(0.1)
    assert channel.requests.count("play") == 1  # nothing more was played to nobody


async def test_survives_an_asterisk_restart(daemon_factory: list[Daemon], tmp_path: Path, ari: FakeAri) -> None:
    daemon = ari_daemon(daemon_factory, tmp_path, ari)
    await ari.wait_connected()
    await ari.restart(downtime=1.5)
    await ari.wait_connected()
    assert ari.connections == 2
    channel = await finished(await ari.call("+15557654321", "after restart", "announce=no"))
    assert channel.variables["SMS_STATUS"] == "SENT"
    assert daemon.output().count("reconnecting with backoff") == 1  # logged once per outage


async def test_wrong_ari_password_is_reported_once(daemon_factory: list[Daemon], tmp_path: Path,
                                                   ari: FakeAri) -> None:
    daemon = ari_daemon(daemon_factory, tmp_path, ari, password="Xq9-bad")
    deadline = time.monotonic() + 10
    while ari.refused_auth < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert daemon.output().count("reconnecting with backoff") == 1
    assert "refused the ari.conf user 'asterisk' (HTTP 401)" in daemon.output()
    assert "Xq9-bad" not in daemon.output()
    assert base64.b64encode(b"asterisk:Xq9-bad").decode() not in daemon.output()


async def test_call_command_needs_its_own_permission(daemon_factory: list[Daemon], tmp_path: Path,
                                                     ari: FakeAri) -> None:
    """The Ozeki Call command over HTTP: off for a user who may send SMS, limited to the user's call
    destinations, and endpoints only where [asterisk] call_endpoints allows them; refusals are Ozeki 306. The
    answered call's script sends SMS as the user who placed the call, within that user's limits (not as the
    Asterisk principal, which has none), and cannot move the call elsewhere in the dialplan (BlindTransfer)."""
    async def ivr(_: web.Request) -> web.Response:
        return web.Response(text="<Response><SendSms Recipient='+4420123456'>premium</SendSms>"
                                 "<SendSms Recipient='+36201111111'>allowed</SendSms>"
                                 "<BlindTransfer>from-internal,0900123456</BlindTransfer></Response>")

    script = web.Application()
    script.router.add_route("*", "/ivr", ivr)
    runner = web.AppRunner(script)
    await runner.setup()
    script_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", script_port).start()
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[speech]
cache_dir = "{tmp_path / 'tts'}"
[callbacks]
allowed_hosts = ["127.0.0.1"]
[asterisk]
call_endpoints = ["PJSIP/*"]
[[users]]
name = "sender"
password_hash = "{hash_password('pw')}"
[[users]]
name = "caller"
password_hash = "{hash_password('pw')}"
can_call = true
call_destinations = ["+3620", "PJSIP/1??"]
allowed_destinations = ["+3620"]
[[users]]
name = "viewer"
password_hash = "{hash_password('viewer-secret')}"
admin = true
[[transports]]
url = "simulator"
""")
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config", str(config), "--ari",
                          f"http://asterisk:ari-secret@127.0.0.1:{ari.port}?app=sendsms")
    await ari.wait_connected()
    url = quote(f"http://127.0.0.1:{script_port}/ivr", safe="")

    async def call(user: str, dialed: str) -> tuple[str, str]:
        query = f"command=Call&Username={user}&Password=pw&Dialed={quote(dialed, safe='')}&Url={url}"
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.base}/api?{query}") as response:
            root = etree.fromstring(await response.read())
        return root.findtext("Code") or "", root.findtext("Message") or ""

    try:
        assert await call("sender", "+36201234567") == ("306", "Forbidden user: sender may not place calls "
                                                               "(can_call is off)")
        code, message = await call("caller", "+44201234567")
        assert code == "306" and "may not call +44201234567" in message
        code, message = await call("caller", "Local/100@from-internal")
        assert code == "306" and "call_endpoints" in message
        code, message = await call("caller", "PJSIP/2000")
        assert code == "306" and "may not call PJSIP/2000" in message
        assert ari.originated == []  # nothing was dialled for a refused call
        assert (await call("caller", "PJSIP/100"))[0] == "200"
        assert (await call("caller", "+36201234567"))[0] == "200"
        assert [o["endpoint"] for o in ari.originated] == ["PJSIP/100", "Local/+36201234567@from-internal"]
        deadline = time.monotonic() + 20
        while not all(channel.gone for channel in ari.channels.values()):
            assert time.monotonic() < deadline, daemon.output()
            await asyncio.sleep(0.05)
        assert all(c.requests[0] == "answer" and c.requests[-1] == "hangup" for c in ari.channels.values())
        assert not any(c.continued for c in ari.channels.values())  # BlindTransfer refused: ended instead
        assert daemon.output().count("a call caller placed cannot be transferred") == 2
        assert set(ari.channels) == {o["channelId"] for o in ari.originated}  # the ids we gave
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{daemon.base}/api/messages?limit=10",
                                   headers=basic_auth("viewer", "viewer-secret")) as response:
                sent = await response.json()
        assert sorted((m["recipient"], m["username"]) for m in sent) == [("+36201111111", "caller")] * 2
        assert daemon.output().count("OzML SendSms to +4420123456: FAILED") == 2  # outside caller's limits
    finally:
        await runner.cleanup()
