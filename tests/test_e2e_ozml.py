"""OzML on calls: the seed's script run as written over FastAGI and over ARI against the fakes and the real
daemon, a UserInput round trip through the application's web server, and a script that cannot be fetched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from asterisk_sendsms.core.passwords import hash_password

from .conftest import REPO, Daemon, free_port, get_status, start_daemon
from .peers.fake_ari import FakeAri
from .peers.fake_asterisk import FakeChannel, base_environment, run_fastagi, run_process_agi
from .test_e2e_agi import agi_env
from .test_e2e_ari import finished
from .test_ozml import SEED


@dataclass
class App:
    """The web application that serves OzML and receives the call's notifications."""

    base: str
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def app() -> AsyncIterator[App]:
    port = free_port()
    served = App(f"http://127.0.0.1:{port}")

    async def handle(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        served.posts.append((request.path, form))
        if request.path == "/seed":
            return web.Response(text=SEED, content_type="text/xml")
        if request.path == "/error":
            return web.Response(text="<Response><Speak>We are sorry.</Speak><Hangup/></Response>")
        if request.path == "/odd":
            return web.Response(text="<Response><Dance/><Speak>never heard</Speak></Response>")
        if request.path == "/menu":
            return web.Response(text=f'<Response><UserInput ForwardToUrl="{served.base}/dtmf" MaxDigits="6" '
                                     'Timeout="2"><Speak>Enter your order number</Speak></UserInput></Response>')
        if request.path == "/dtmf":
            return web.Response(text=f'<Response><SendSms Recipient="+36201234567">Order {form["Dtmf"]} confirmed'
                                     '</SendSms><SendDTMF>1#</SendDTMF><BlindTransfer>sales,100</BlindTransfer>'
                                     '</Response>')
        return web.Response(status=404)

    server = web.Application()
    server.router.add_post("/{name}", handle)
    runner = web.AppRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield served
    await runner.cleanup()


def gateway(daemon_factory: list[Daemon], tmp_path: Path, *args: str) -> Daemon:
    config = tmp_path / "ozml.toml"
    config.write_text(f"""
[speech]
cache_dir = "{tmp_path / 'tts'}"
[[users]]
name = "viewer"
password_hash = "{hash_password('viewer-secret')}"
admin = true
can_call = true
call_destinations = ["+36"]
[[transports]]
url = "simulator?receipt_delay=0.1"
""")
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config), *args)


def ozml_call(port: int, tmp_path: Path, query: str, **extra: str) -> FakeChannel:
    """Asterisk's side of AGI(agi://127.0.0.1:PORT/ozml?QUERY)."""
    dtmf = extra.pop("dtmf", "")
    return FakeChannel(base_environment(f"agi://127.0.0.1:{port}/ozml?{query}", agi_network="yes",
                                        agi_network_script=f"ozml?{query}", **extra), tmp_path / "sounds", dtmf=dtmf)


def words(channel: FakeChannel) -> list[str]:
    return [" ".join(line.split(" ")[:2]) if line.split(" ")[0] in ("SET", "STREAM", "WAIT") else line.split(" ")[0]
            for line, _ in channel.log]


async def test_seed_script_over_fastagi(daemon_factory: list[Daemon], tmp_path: Path, app: App) -> None:
    port = free_port()
    daemon = gateway(daemon_factory, tmp_path, "--fastagi", f"127.0.0.1:{port}")
    channel = ozml_call(port, tmp_path, f"url={app.base}/seed", agi_callerid="+36301112222")
    await run_fastagi(channel, "127.0.0.1", port)
    assert words(channel) == ["ANSWER", "STREAM FILE", "SET VARIABLE", "SET VARIABLE", "SET VARIABLE",
                              "STREAM FILE", "HANGUP"]
    assert len(channel.played) == 2  # both Speak commands were heard
    [(path, form)] = app.posts
    assert path == "/seed" and form["NotificationName"] == "CallConnected" and form["Caller"] == "+36301112222"
    async with aiohttp.ClientSession() as session:
        message = await get_status(session, daemon, channel.variables["SMS_ID"], "viewer", "viewer-secret")
    assert (message["recipient"], message["text"]) == ("+062554670", "Hello! How are you?")


async def test_seed_script_over_ari(daemon_factory: list[Daemon], tmp_path: Path, app: App) -> None:
    ari = FakeAri(tmp_path / "sounds")
    await ari.start(free_port())
    try:
        daemon = gateway(daemon_factory, tmp_path, "--ari", f"http://asterisk:ari-secret@127.0.0.1:{ari.port}")
        await ari.wait_connected()
        channel = await finished(await ari.call("ozml", f"{app.base}/seed"))
        assert channel.requests == ["answer", "play", "variable", "variable", "variable", "play", "hangup"]
        assert [state for _, state in channel.played] == ["done", "done"]
        async with aiohttp.ClientSession() as session:
            message = await get_status(session, daemon, channel.variables["SMS_ID"], "viewer", "viewer-secret")
        assert message["recipient"] == "+062554670" and message["text"] == "Hello! How are you?"
    finally:
        await ari.stop()


async def test_user_input_round_trip_over_fastagi(daemon_factory: list[Daemon], tmp_path: Path, app: App) -> None:
    port = free_port()
    daemon = gateway(daemon_factory, tmp_path, "--fastagi", f"127.0.0.1:{port}")
    channel = ozml_call(port, tmp_path, f"url={app.base}/menu", dtmf="4711#9")
    await run_fastagi(channel, "127.0.0.1", port)
    assert [p for p, _ in app.posts] == ["/menu", "/dtmf"] and app.posts[1][1]["Dtmf"] == "4711"
    assert app.posts[1][1]["NotificationName"] == "DtmfEntered"
    assert 'EXEC "SendDTMF" "1#"' in [line for line, _ in channel.log]
    assert channel.location == {"context": "sales", "extension": "100", "priority": "1"}
    async with aiohttp.ClientSession() as session:
        message = await get_status(session, daemon, channel.variables["SMS_ID"], "viewer", "viewer-secret")
    assert message["text"] == "Order 4711 confirmed"


async def test_user_input_round_trip_over_ari(daemon_factory: list[Daemon], tmp_path: Path, app: App) -> None:
    ari = FakeAri(tmp_path / "sounds")
    await ari.start(free_port())
    try:
        gateway(daemon_factory, tmp_path, "--ari", f"http://asterisk:ari-secret@127.0.0.1:{ari.port}")
        await ari.wait_connected()
        channel = await ari.call("ozml", f"{app.base}/menu")
        deadline = time.monotonic() + 10
        while "play" not in channel.requests:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await ari.caller_keys(channel, "815#")
        await finished(channel)
        assert app.posts[1][1]["Dtmf"] == "815"
        assert channel.dtmf_sent == ["1#"] and channel.continued_to == {"extension": "100", "priority": "1",
                                                                       "context": "sales"}
    finally:
        await ari.stop()


async def test_a_script_that_cannot_be_fetched_ends_the_call_politely(daemon_factory: list[Daemon],
                                                                      tmp_path: Path, app: App) -> None:
    port = free_port()
    daemon = gateway(daemon_factory, tmp_path, "--fastagi", f"127.0.0.1:{port}")
    channel = ozml_call(port, tmp_path, f"url={app.base}/missing")
    await run_fastagi(channel, "127.0.0.1", port)
    assert words(channel) == ["ANSWER", "STREAM FILE", "HANGUP"]  # "sorry", then goodbye
    assert "answered HTTP 404" in daemon.output()


async def test_http_call_command_originates_and_runs_the_script(daemon_factory: list[Daemon], tmp_path: Path,
                                                                 app: App) -> None:
    ari = FakeAri(tmp_path / "sounds")
    await ari.start(free_port())
    try:
        daemon = gateway(daemon_factory, tmp_path, "--ari", f"http://asterisk:ari-secret@127.0.0.1:{ari.port}")
        await ari.wait_connected()
        query = f"command=Call&Username=viewer&Password=viewer-secret&Dialed=%2b36201234567&Url={app.base}/seed"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{daemon.base}/api?{query}") as response:
                root = etree.fromstring(await response.read())
            assert root.tag == "OzApi_CommandResult_Call" and root.findtext("Code") == "200", etree.tostring(root)
            call_id = root.findtext("CallId") or ""
            channel = await finished(ari.channels[call_id])
            message = await get_status(session, daemon, channel.variables["SMS_ID"], "viewer", "viewer-secret")
            bad = "command=Call&Username=viewer&Password=viewer-secret&Dialed=%2b3620&Url=ftp://x/y"
            async with session.get(f"{daemon.base}/api?{bad}") as response:
                refused = etree.fromstring(await response.read())
        assert ari.originated[0]["endpoint"] == "Local/+36201234567@from-internal"
        assert ari.originated[0]["appArgs"] == f"ozml,{app.base}/seed"
        assert channel.requests[-1] == "hangup" and message["text"] == "Hello! How are you?"
        assert refused.findtext("Code") == "302" and "'Url'" in (refused.findtext("Message") or "")
    finally:
        await ari.stop()


async def test_process_agi_runs_a_script_from_a_file_and_inline(daemon_factory: list[Daemon], tmp_path: Path,
                                                                 app: App) -> None:
    daemon = gateway(daemon_factory, tmp_path)
    script = tmp_path / "receipt.xml"
    script.write_text(SEED)
    env = agi_env(tmp_path, daemon.base)
    env["ASTERISK_SENDSMS_AGI_CONFIG"] = str(tmp_path / "viewer-agi.toml")
    (tmp_path / "viewer-agi.toml").write_text(
        f'url = "{daemon.base}"\nusername = "viewer"\npassword = "viewer-secret"\n'
        f'[speech]\ncache_dir = "{tmp_path / "agi-tts"}"\n')
    ozml_agi = REPO / "agi-bin" / "ozml.agi"
    for source in (str(script), "<Response><SendSms Recipient='+3620'>inline</SendSms><Hangup/></Response>"):
        channel = FakeChannel(base_environment("ozml.agi"), tmp_path / "sounds")
        assert await run_process_agi(channel, ozml_agi, [source], env) == 0
        assert words(channel)[-1] == "HANGUP" and channel.variables["SMS_STATUS"] in ("QUEUED", "SENT")
    async with aiohttp.ClientSession() as session:
        message = await get_status(session, daemon, channel.variables["SMS_ID"], "viewer", "viewer-secret")
    assert message["text"] == "inline"


async def test_process_agi_fetches_internal_scripts_only_where_agi_toml_allows(daemon_factory: list[Daemon],
                                                                              tmp_path: Path, app: App) -> None:
    """ozml.agi runs on the Asterisk host with the URL policy of the daemon: an application on the LAN (here on
    loopback) must be allowed in agi.toml, and until then nothing is fetched from it."""
    daemon = gateway(daemon_factory, tmp_path)
    env = agi_env(tmp_path, daemon.base)
    env["ASTERISK_SENDSMS_AGI_CONFIG"] = str(tmp_path / "viewer-agi.toml")
    settings = (f'url = "{daemon.base}"\nusername = "viewer"\npassword = "viewer-secret"\n{{allow}}'
                f'[speech]\ncache_dir = "{tmp_path / "agi-tts"}"\n')
    ozml_agi = REPO / "agi-bin" / "ozml.agi"
    for allow, fetched in (("", False), ('ozml_allowed_networks = ["127.0.0.0/8"]\n', True)):
        (tmp_path / "viewer-agi.toml").write_text(settings.format(allow=allow))
        app.posts.clear()
        channel = FakeChannel(base_environment("ozml.agi"), tmp_path / "sounds")
        await run_process_agi(channel, ozml_agi, [f"{app.base}/seed"], env)
        assert ([p for p, _ in app.posts] == ["/seed"]) is fetched, app.posts
        assert ("SMS_ID" in channel.variables) is fetched


async def test_error_url_and_unknown_commands(daemon_factory: list[Daemon], tmp_path: Path, app: App) -> None:
    port = free_port()
    daemon = gateway(daemon_factory, tmp_path, "--fastagi", f"127.0.0.1:{port}")
    channel = ozml_call(port, tmp_path, f"url={app.base}/missing&error_url={app.base}/error")
    await run_fastagi(channel, "127.0.0.1", port)
    assert [p for p, _ in app.posts] == ["/missing", "/error"]
    assert app.posts[1][1]["NotificationName"] == "Error" and "HTTP 404" in app.posts[1][1]["Error"]
    assert words(channel) == ["ANSWER", "STREAM FILE", "HANGUP"]
    channel = ozml_call(port, tmp_path, f"url={app.base}/odd")
    await run_fastagi(channel, "127.0.0.1", port)
    assert words(channel) == ["ANSWER", "STREAM FILE"]  # <Dance/> skipped by default, the Speak still heard
    assert "unknown command <Dance> at line 1; skipped" in daemon.output()
