"""A hostile ARI peer (the fake Asterisk of tests/peers/fake_ari.py, made to misbehave) against the real daemon:
malformed and deeply nested JSON, events of every wrong shape, unknown events, events for unknown channels,
frames over the size limit, binary frames, floods, HTTP errors and oversized answers on its REST calls, a
refused originate, and the websocket dropped mid-call. After each: the daemon is up, serves HTTP SendSms and
a normal Stasis call, and every message it accepted is delivered."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lxml import etree

from asterisk_sendsms.core.passwords import hash_password

from .conftest import Daemon, free_port
from .hostile import ALLOWED, VIEWER, delivered, http_send, messages_to, still_running
from .peers.fake_ari import FakeAri, FakeAriChannel

pytestmark = pytest.mark.asyncio(loop_scope="module")
HOSTILE_CASES: list[str] = []


class HostileAri(FakeAri):
    """The fake ARI with faults: REST requests about a channel in `faults` get that answer instead."""

    def __init__(self, sounds_dir: Path) -> None:
        super().__init__(sounds_dir)
        self.faults: dict[str, Callable[[], web.StreamResponse]] = {}
        self.originate_fault: web.Response | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        parts = request.path.split("/")
        channel_id = parts[3] if len(parts) > 3 and parts[2] == "channels" else ""
        if channel_id in self.faults:
            channel = self.channels.get(channel_id)
            if channel is not None:
                channel.requests.append(f"fault {parts[4] if len(parts) > 4 else request.method}")
            return self.faults[channel_id]()  # a response can be sent once: a new one each time
        if request.path == "/ari/channels" and request.method == "POST" and self.originate_fault is not None:
            return self.originate_fault
        return await super()._auth(request, handler)

    async def raw(self, *frames: str | bytes) -> None:
        for socket in list(self.sockets):
            for frame in frames:
                if isinstance(frame, bytes):
                    await socket.send_bytes(frame)
                else:
                    await socket.send_str(frame)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ari(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HostileAri]:
    fake = HostileAri(tmp_path_factory.mktemp("ari-sounds"))
    await fake.start(free_port())
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, ari: HostileAri) -> Iterator[Daemon]:
    tmp_path = tmp_path_factory.mktemp("hostile-ari")
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[speech]
cache_dir = "{tmp_path / 'tts'}"
[asterisk]
ari = ["http://asterisk:ari-secret@127.0.0.1:{ari.port}?app=sendsms"]
user = "ivr"
[[users]]
name = "ivr"
password_hash = "{hash_password('unused-ivr-password')}"
allowed_destinations = ["{ALLOWED}"]
[[users]]
name = "{VIEWER[0]}"
password_hash = "{hash_password(VIEWER[1])}"
admin = true
can_call = true
call_destinations = ["{ALLOWED}"]
[[transports]]
url = "simulator?receipt_delay=0.1"
""")
    started = Daemon(tmp_path / "data", ["--config", str(config)])
    started.start()
    yield started
    assert started.stop() == 0, started.output()[-3000:]


async def finished(channel: FakeAriChannel, timeout: float = 20.0) -> FakeAriChannel:
    deadline = time.monotonic() + timeout
    while not channel.gone:
        assert time.monotonic() < deadline, f"channel still in the application: {channel.requests}"
        await asyncio.sleep(0.05)
    return channel


async def normal_call(ari: HostileAri, text: str = "normal ARI call") -> str:
    await ari.wait_connected()
    channel = await finished(await ari.call(f"{ALLOWED}0200100", text, "announce=no"))
    assert channel.variables["SMS_STATUS"] in ("SENT", "DELIVERED"), channel.variables
    return channel.variables["SMS_ID"]


async def healthy(daemon: Daemon, ari: HostileAri, accepted: list[str] = ()) -> None:  # type: ignore[assignment]
    still_running(daemon)
    ids = [await http_send(daemon), await normal_call(ari), *accepted]
    await delivered(daemon, ids)
    still_running(daemon)


async def sent_to(daemon: Daemon, recipient: str, count: int) -> list[str]:
    deadline = time.monotonic() + 20
    while len(found := await messages_to(daemon, recipient)) < count:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)
    assert len(found) == count, found
    return [str(m["sms_id"]) for m in found]


def hostile(function):  # type: ignore[no-untyped-def]
    HOSTILE_CASES.append(function.__name__)
    return function


@hostile
async def test_malformed_json(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    await ari.raw("{not json", "[1, 2", "", "\0\xff", "null", "42", '"StasisStart"', "[]", '{"type": "Stasis',
                  "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000)
    await healthy(daemon, ari)
    assert daemon.output().count("sent an event that is not a JSON object") == 1  # once per connection


@hostile
async def test_events_of_the_wrong_shape(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    live = await ari.call(f"{ALLOWED}0200200", "shapes", "announce=no&wait=delivered&timeout=5")
    shapes: list[dict[str, Any]] = [
        {"type": "StasisStart", "channel": "x", "args": "abc"},
        {"type": "StasisStart", "channel": None, "args": None},
        {"type": "StasisStart", "channel": {"id": None}, "args": [{"a": 1}, [2]]},
        {"type": "StasisStart", "channel": {"id": ""}, "args": ["+15550200200", "no id"]},
        {"type": "StasisStart", "channel": [1, 2], "args": {"a": "b"}},
        {"type": ["StasisStart"], "channel": {"id": live.id}},
        {"type": {"x": 1}},
        {"type": "PlaybackFinished", "playback": "x"},
        {"type": "PlaybackFinished", "playback": {"target_uri": 5, "id": [1]}},
        {"type": "PlaybackFinished", "playback": {"target_uri": f"channel:{live.id}", "id": {"a": 1}}},
        {"type": "RecordingFinished", "recording": [1], "channel": {"id": live.id}},
        {"type": "RecordingFailed", "recording": "r"},
        {"type": "ChannelDtmfReceived", "channel": {"id": live.id}, "digit": {"d": 1}},
        {"type": "ChannelDtmfReceived", "channel": {"id": live.id}, "digit": "12345"},
        {"type": "ChannelDtmfReceived", "channel": {"id": live.id}},
        {"channel": {"id": live.id}},
    ]
    await ari.raw(*(json.dumps(shape) for shape in shapes))
    channel = await finished(live)
    assert channel.variables["SMS_STATUS"] == "DELIVERED", channel.variables
    await healthy(daemon, ari, [channel.variables["SMS_ID"]])


@hostile
async def test_unknown_events(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    for kind in ("FooBar", "ChannelVarset", "BridgeCreated", "EndpointStateChange", "", "\r\nforged"):
        await ari.emit(kind, channel={"id": "nobody"}, extra={"deep": [1, {"x": None}]})
    await ari.raw(json.dumps({"no": "type"}))
    await healthy(daemon, ari)


@hostile
async def test_events_for_unknown_channels(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    for channel_id in ("nobody", "", "1795570287.999", "../../etc", "\r\nINFO forged line"):
        for kind in ("StasisEnd", "ChannelHangupRequest", "ChannelDestroyed", "ChannelDtmfReceived"):
            await ari.emit(kind, channel={"id": channel_id}, digit="1")
        await ari.emit("PlaybackFinished", playback={"id": "p", "target_uri": f"channel:{channel_id}"})
        await ari.emit("RecordingFinished", recording={"name": "r", "target_uri": f"channel:{channel_id}"})
    await healthy(daemon, ari)


@hostile
async def test_a_frame_over_the_limit_ends_the_connection_not_the_daemon(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    before = ari.connections
    try:
        await ari.raw(json.dumps({"type": "FooBar", "pad": "x" * (5 * 1024 * 1024)}))
    except ConnectionError:
        pass  # the daemon hung up on it before it was all sent
    deadline = time.monotonic() + 20
    while ari.connections == before or not ari.sockets:
        assert time.monotonic() < deadline, "the daemon did not reconnect"
        await asyncio.sleep(0.05)
    await healthy(daemon, ari)


@hostile
async def test_binary_frames_and_a_flood(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    await ari.raw(b"\0\xff" * 1000, b"", b'{"type": "StasisStart"}')
    flood = json.dumps({"type": "ChannelVarset", "channel": {"id": "nobody"}, "variable": "X", "value": "y"})
    await ari.raw(*([flood] * 10_000))
    await healthy(daemon, ari)


@hostile
async def test_a_dtmf_flood_on_a_live_channel(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    live = await ari.call(f"{ALLOWED}0200300", "dtmf flood", "announce=no&wait=delivered&timeout=5")
    await ari.raw(*[json.dumps({"type": "ChannelDtmfReceived", "channel": {"id": live.id}, "digit": "5"})] * 5000)
    channel = await finished(live)
    await healthy(daemon, ari, [channel.variables["SMS_ID"]])


@hostile
async def test_duplicate_stasis_start(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    channel = await ari.call(f"{ALLOWED}0200400", "once", "announce=no&wait=delivered&timeout=5")
    start = json.dumps({"type": "StasisStart", "args": [f"{ALLOWED}0200400", "twice", "announce=no"],
                        "channel": channel.json()})
    await ari.raw(start, start, start)
    await finished(channel)
    ids = await sent_to(daemon, f"{ALLOWED}0200400", 1)  # one flow per channel
    await healthy(daemon, ari, ids)


@hostile
async def test_http_errors_on_rest_calls(daemon: Daemon, ari: HostileAri) -> None:
    """Every REST call about the channel fails (500, 403, 400 with HTML, a 1.5 MiB answer): the SMS still goes."""
    await ari.wait_connected()
    faults = [partial(web.Response, status=500, text="Internal Server Error\r\nINFO forged"),
              partial(web.Response, status=403, text='{"message": "Forbidden"}'),
              partial(web.Response, status=400, text="<html>" + "x" * 1000),
              partial(web.Response, status=200, body=b"x" * (3 * 1024 * 1024 // 2))]
    channels = []
    for number, fault in enumerate(faults):
        channel_id = f"broken.{number}"
        ari.faults[channel_id] = fault
        channel = FakeAriChannel(channel_id, f"PJSIP/broken-{number}", "sendsms")
        ari.channels[channel_id] = channel
        await ari.emit("StasisStart", args=[f"{ALLOWED}0200500", f"broken {number}", "wait=none"],
                       channel=channel.json())
        channels.append(channel)
    ids = await sent_to(daemon, f"{ALLOWED}0200500", len(faults))
    deadline = time.monotonic() + 20
    while not all(any(r.startswith("fault variable") for r in c.requests) for c in channels):
        assert time.monotonic() < deadline, [c.requests for c in channels]
        await asyncio.sleep(0.05)
    for channel in channels:
        await ari._end(channel, soft=False)
    await healthy(daemon, ari, ids)
    assert "\nINFO forged" not in daemon.output() and "\\r\\nINFO forged" in daemon.output()
    assert "/channels/broken.3/answer: an answer larger than 1048576 bytes" in daemon.output()


@hostile
async def test_a_refused_originate(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    query = (f"command=Call&Username={VIEWER[0]}&Password={VIEWER[1]}&Dialed={quote(ALLOWED)}0200600"
             f"&Url={quote('http://127.0.0.1:9/none', safe='')}")
    answers = []
    for fault in (web.Response(status=500, text="Allocation failed"), web.Response(status=200, text="not json"),
                  web.Response(status=200, text="[1, 2]"), web.Response(status=200, body=b"{" * 2_000_000),
                  web.Response(status=200, text="[" * 100_000), web.json_response({"id": "x\r\nINFO forged"}),
                  web.json_response({"id": {"nested": 1}})):
        ari.originate_fault = fault
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.base}/api?{query}") as response:
            answers.append(etree.fromstring(await response.read()).findtext("Code"))
    ari.originate_fault = None
    assert answers == ["500"] * 7
    await healthy(daemon, ari)


@hostile
async def test_websocket_dropped_mid_call(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    ari.playback_speed = 0.5  # the first prompt lasts: the drop comes while it plays
    try:
        channel = await ari.call(f"{ALLOWED}0200700", "dropped", "wait=delivered&timeout=5")
        deadline = time.monotonic() + 20
        while "play" not in channel.requests:
            assert time.monotonic() < deadline, channel.requests
            await asyncio.sleep(0.02)
        before = ari.connections
        for socket in list(ari.sockets):
            await socket.close()
        ids = await sent_to(daemon, f"{ALLOWED}0200700", 1)
        deadline = time.monotonic() + 20
        while ari.connections == before or "variable" not in channel.requests:
            assert time.monotonic() < deadline, (ari.connections, channel.requests)
            await asyncio.sleep(0.05)
    finally:
        ari.playback_speed = 50.0
    await ari._end(channel, soft=False)
    await healthy(daemon, ari, ids)


@hostile
async def test_ari_sends_as_the_configured_user(daemon: Daemon, ari: HostileAri) -> None:
    await ari.wait_connected()
    channel = await finished(await ari.call("+4420123456", "premium", "announce=no"))
    assert channel.variables["SMS_STATUS"] == "FAILED"
    assert "ivr may not send to +4420123456" in channel.variables["SMS_ERROR"]
    await healthy(daemon, ari)
    assert (await messages_to(daemon, f"{ALLOWED}0200100"))[0]["username"] == "ivr"


async def test_the_hostile_cases_are_counted() -> None:
    assert len(HOSTILE_CASES) >= 12, HOSTILE_CASES
