"""A fake Asterisk ARI (REST + event websocket) that behaves as ari-stasis.txt records: answer 204, variable
204/200, play 201 with queued playbacks finishing `done` or `failed`, hangup 204, 404 `Channel not found` for a
gone channel, StasisStart with args, ChannelHangupRequest then StasisEnd."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

NOT_FOUND = {"message": "Channel not found"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())


@dataclass
class FakeAriChannel:
    id: str
    name: str
    app_data: str
    state: str = "Ring"
    variables: dict[str, str] = field(default_factory=dict)
    played: list[tuple[str, str]] = field(default_factory=list)  # (media, done|failed)
    requests: list[str] = field(default_factory=list)
    continued: bool = False
    continued_to: dict[str, str] = field(default_factory=dict)
    dtmf_sent: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    hangup_reason: str = ''
    gone: bool = False
    queue: asyncio.Lock = field(default_factory=asyncio.Lock)

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "protocol_id": "",
                "caller": {"name": "", "number": ""}, "connected": {"name": "", "number": ""}, "accountcode": "",
                "dialplan": {"context": "aritest", "exten": "s", "priority": 1, "app_name": "Stasis",
                             "app_data": self.app_data},
                "creationtime": _now(), "language": "en"}


class FakeAri:
    def __init__(self, sounds_dir: Path, username: str = "asterisk", password: str = "ari-secret",
                 app: str = "sendsms", playback_speed: float = 50.0) -> None:
        self.sounds_dir = sounds_dir
        self.credentials = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.app = app
        self.playback_speed = playback_speed
        self.channels: dict[str, FakeAriChannel] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.connections = 0
        self.refused_auth = 0
        self.originated: list[dict[str, str]] = []
        self.down = False
        self._ids = itertools.count(7)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------ server

    async def start(self, port: int) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/ari/events", self._events)
        app.router.add_post("/ari/channels", self._originate)
        app.router.add_post("/ari/channels/{id}/answer", self._answer)
        app.router.add_post("/ari/channels/{id}/variable", self._set_variable)
        app.router.add_get("/ari/channels/{id}/variable", self._get_variable)
        app.router.add_post("/ari/channels/{id}/play", self._play)
        app.router.add_post("/ari/channels/{id}/play/{playback}", self._play)
        app.router.add_post("/ari/channels/{id}/continue", self._continue)
        app.router.add_post("/ari/channels/{id}/dtmf", self._dtmf)
        app.router.add_post("/ari/channels/{id}/record", self._record)
        app.router.add_delete("/ari/channels/{id}", self._hangup)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = port
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        for socket in list(self.sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self, downtime: float) -> None:
        """Asterisk restarts: the event stream drops and the port is closed for a while."""
        await self.stop()
        await asyncio.sleep(downtime)
        await self.start(self.port)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.credentials:
            self.refused_auth += 1
            return web.json_response({"message": "Authentication required"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        if request.query.get("app") != self.app:
            raise web.HTTPBadRequest(text="unknown application")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections += 1
        self.sockets.append(socket)
        try:
            async for _ in socket:
                pass
        finally:
            self.sockets.remove(socket)
        return socket

    async def emit(self, event_type: str, **fields: Any) -> None:
        event = {"type": event_type, "timestamp": _now(), **fields, "asterisk_id": "02:fc:00:00:00:01",
                 "application": self.app}
        for socket in list(self.sockets):
            await socket.send_str(json.dumps(event))

    async def wait_connected(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.sockets:
            assert time.monotonic() < deadline, "the ARI client never connected"
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ calls

    async def call(self, *args: str) -> FakeAriChannel:
        """A dialplan runs Stasis(sendsms,ARGS...): the channel enters the application."""
        number = next(self._ids)
        channel = FakeAriChannel(f"1795570287.{number}", f"Local/s@aritest-0000000{number};2",
                                 ",".join([self.app, *args]))
        self.channels[channel.id] = channel
        await self.emit("StasisStart", args=list(args), channel=channel.json())
        return channel

    async def _originate(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if "/" not in params.get("endpoint", ""):
            return web.json_response({"error": "Allocation failed"}, status=500)
        self.originated.append(params)
        number = next(self._ids)
        channel = FakeAriChannel(params.get("channelId") or f"1795570300.{number}",  # Asterisk takes a given id
                                 f"{params['endpoint']}-0000000{number}",
                                 ",".join([self.app, params.get("appArgs", "")]), state="Down")
        self.channels[channel.id] = channel

        async def answered() -> None:  # the callee picks up: the channel enters the application
            await asyncio.sleep(0.1)
            channel.state = "Up"
            await self.emit("StasisStart", args=params.get("appArgs", "").split(","), channel=channel.json())
        asyncio.get_running_loop().create_task(answered())
        return web.json_response(channel.json())

    async def caller_hangs_up(self, channel: FakeAriChannel) -> None:
        await self._end(channel, soft=True)

    async def _end(self, channel: FakeAriChannel, soft: bool) -> None:
        if channel.gone:
            return
        channel.gone = True
        await self.emit("ChannelHangupRequest", cause=16 if not soft else 32, soft=soft, channel=channel.json())
        await self.emit("StasisEnd", channel=channel.json())

    def _channel(self, request: web.Request, what: str) -> FakeAriChannel | None:
        channel = self.channels.get(request.match_info["id"])
        if channel is None or channel.gone:
            return None
        channel.requests.append(what)
        return channel

    async def _answer(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "answer")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        channel.state = "Up"
        await self.emit("ChannelStateChange", channel=channel.json())
        return web.Response(status=204)

    async def _set_variable(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "variable")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        name, value = request.query.get("variable"), request.query.get("value", "")
        if not name:
            return web.json_response({"message": "Variable name is required"}, status=400)
        channel.variables[name] = value
        await self.emit("ChannelVarset", variable=name, value=value, channel=channel.json())
        return web.Response(status=204)

    async def _get_variable(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "get variable")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        name = request.query.get("variable", "")
        if name not in channel.variables:
            return web.json_response({"message": "Provided variable was not found"}, status=404)
        return web.json_response({"value": channel.variables[name]})

    def _samples(self, media: str) -> int | None:
        if not media.startswith("sound:"):
            return None
        name = media[len("sound:"):]
        path = Path(name + ".wav") if name.startswith("/") else self.sounds_dir / f"{name}.wav"
        try:
            with wave.open(str(path)) as wav:
                if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (8000, 1, 2):
                    return None
                return wav.getnframes()
        except (OSError, wave.Error, EOFError):
            return None

    async def _play(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "play")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        media = request.query.get("media", "")
        playback = {"id": request.match_info.get("playback") or f"pb-{next(self._ids)}", "media_uri": media,
                    "target_uri": f"channel:{channel.id}", "language": "en", "state": "queued"}
        asyncio.get_running_loop().create_task(self._playback(channel, dict(playback)))
        return web.json_response(playback, status=201)

    async def _playback(self, channel: FakeAriChannel, playback: dict[str, Any]) -> None:
        async with channel.queue:  # one playback after another, as Asterisk queues them
            if channel.gone:
                return
            samples = self._samples(playback["media_uri"])
            await self.emit("PlaybackStarted", playback={**playback, "state": "playing"})
            if samples is not None:
                await asyncio.sleep(samples / 8000 / self.playback_speed)
            state = "done" if samples is not None and not channel.gone else "failed"
            channel.played.append((playback["media_uri"], state))
            await self.emit("PlaybackFinished", playback={**playback, "state": state})

    async def caller_keys(self, channel: FakeAriChannel, digits: str) -> None:
        for digit in digits:
            await self.emit("ChannelDtmfReceived", digit=digit, duration_ms=100, channel=channel.json())

    async def _dtmf(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "dtmf")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        channel.dtmf_sent.append(request.query.get("dtmf", ""))
        return web.Response(status=204)

    async def _record(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "record")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        name = request.query.get("name", "")
        channel.recordings.append(name)
        recording = {"name": name, "format": request.query.get("format", "wav"), "state": "recording",
                     "target_uri": f"channel:{channel.id}"}

        async def finish() -> None:
            await asyncio.sleep(0.05)
            await self.emit("RecordingFinished", recording={**recording, "state": "done"})
        asyncio.get_running_loop().create_task(finish())
        return web.json_response(recording, status=201)

    async def _continue(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "continue")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        channel.continued = True
        channel.continued_to = dict(request.query)
        channel.gone = True  # it left the application
        await self.emit("StasisEnd", channel=channel.json())
        return web.Response(status=204)

    async def _hangup(self, request: web.Request) -> web.Response:
        channel = self._channel(request, "hangup")
        if channel is None:
            return web.json_response(NOT_FOUND, status=404)
        channel.hangup_reason = request.query.get("reason", "normal")
        await self._end(channel, soft=False)
        return web.Response(status=204)
