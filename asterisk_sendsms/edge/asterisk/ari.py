"""The ARI listener: a thin aiohttp client for the few REST calls and the event websocket. It handles
`Stasis(sendsms,RECIPIENT,MESSAGE[,OPTIONS])` channels, each in its own task, reconnects with backoff and
survives Asterisk restarts. (The `ari` package cannot be imported on Python 3.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp

from asterisk_sendsms.app.callflow import Prompter, SmsBackend, send_sms_from_params
from asterisk_sendsms.app.ozml_runner import CallDetails, OzmlRunner
from asterisk_sendsms.config import AriConfig, PromptConfig, UserConfig
from asterisk_sendsms.core.errors import ForbiddenUser, SmsGatewayError

__all__ = ["AriApp", "AriChannel", "AriError", "ChannelGone"]

log = logging.getLogger(__name__)

PLAYBACK_TIMEOUT = 600.0
REST_TIMEOUT = 10.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
HANGUP_EVENTS = ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed")
MAX_EVENT_BYTES = 4 * 1024 * 1024  # a larger websocket frame ends the connection (aiohttp), then we reconnect
MAX_REST_BODY = 1024 * 1024  # Asterisk's answers are a few kB; a larger one is not read into memory
# Channels in our application at once; more StasisStarts are left alone (a peer could otherwise start
# unbounded work).
MAX_CHANNELS = 10_000
CHANNEL_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# How long a call placed by the Call command may take to be answered (it rings 30 s, after a Local channel's
# dialplan) before we forget whose it was.
PLACED_TTL = 300.0


def _object(value: object) -> dict[str, Any]:
    """A JSON object of an event, or an empty one: events come from a peer and may have any shape."""
    return value if isinstance(value, dict) else {}


class AriError(SmsGatewayError):
    """An ARI request failed."""


class ChannelGone(AriError):
    """404: the channel has hung up."""


class AriRest:
    def __init__(self, session: aiohttp.ClientSession, config: AriConfig) -> None:
        self._session = session
        self._base = f"{config.base_url}/ari"
        credentials = f"{config.username}:{config.password}".encode()
        self.auth_header = "Basic " + base64.b64encode(credentials).decode("ascii")

    async def call(self, method: str, path: str, **params: str) -> Any:
        try:
            async with self._session.request(method, f"{self._base}{path}", params=params,
                                             headers={"Authorization": self.auth_header},
                                             timeout=aiohttp.ClientTimeout(total=REST_TIMEOUT)) as response:
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > MAX_REST_BODY:
                        raise AriError(f"ARI {method} {path}: an answer larger than {MAX_REST_BODY} bytes")
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise AriError(f"ARI {method} {path}: {str(exc) or type(exc).__name__}") from None
        if status == 404:
            raise ChannelGone(f"ARI {method} {path}: channel not found")
        if status >= 300:
            text = bytes(body[:200]).decode(errors="replace")
            raise AriError(f"ARI {method} {path}: HTTP {status} {text}")
        return bytes(body)


class AriChannel:
    """One channel in our Stasis application, as the call flow's `CallControl`."""

    def __init__(self, rest: AriRest, channel_id: str) -> None:
        self._rest = rest
        self.id = channel_id
        self._path = f"/channels/{quote(channel_id, safe='')}"
        self._gone = False
        self._playbacks: dict[str, asyncio.Future[bool]] = {}
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._recordings: dict[str, asyncio.Future[bool]] = {}
        # Set for a call placed by the Call command: whose call it is.
        self.placed_by: UserConfig | None = None

    @property
    def hung_up(self) -> bool:
        return self._gone

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in HANGUP_EVENTS:
            self._gone = True
            self._settle_playbacks(False)
        elif kind == "ChannelDtmfReceived":
            digit = str(event.get("digit", ""))
            if len(digit) == 1 and self._digits.qsize() < 64:  # a key, and not a flood of them
                self._digits.put_nowait(digit)
        elif kind in ("RecordingFinished", "RecordingFailed"):
            future = self._recordings.pop(str(_object(event.get("recording")).get("name")), None)
            if future is not None and not future.done():
                future.set_result(kind == "RecordingFinished")
        elif kind == "PlaybackFinished":
            playback = _object(event.get("playback"))
            future = self._playbacks.pop(str(playback.get("id")), None)
            if future is not None and not future.done():
                future.set_result(playback.get("state") == "done")

    def _settle_playbacks(self, result: bool) -> None:
        for waiting in (self._playbacks, self._recordings):
            for future in waiting.values():
                if not future.done():
                    future.set_result(result)
            waiting.clear()
        self._digits.put_nowait("")  # wakes a digit collector: nothing more will come

    def connection_lost(self) -> None:
        """Events may be missed while the websocket is down: nobody waits for a playback forever."""
        self._settle_playbacks(False)

    async def _call(self, method: str, suffix: str = "", **params: str) -> Any:
        try:
            return await self._rest.call(method, self._path + suffix, **params)
        except ChannelGone:
            self._gone = True
            raise

    async def answer(self) -> None:
        await self._call("POST", "/answer")

    async def play(self, sound: str) -> bool:
        # Our own playback id, registered before the request: the finished event cannot outrun us.
        playback_id = str(uuid.uuid4())
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._playbacks[playback_id] = future
        try:
            await self._call("POST", f"/play/{playback_id}", media=f"sound:{sound}")
            return await asyncio.wait_for(asyncio.shield(future), PLAYBACK_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            self._playbacks.pop(playback_id, None)

    async def set_variable(self, name: str, value: str) -> None:
        await self._call("POST", "/variable", variable=name, value=value)

    async def hangup(self) -> None:
        await self._call("DELETE")
        self._gone = True

    async def continue_in_dialplan(self) -> None:
        await self._call("POST", "/continue")

    # ------------------------------------------------------------ OzmlCall

    async def collect_digits(self, seconds: float, max_digits: int, terminator: str) -> str:
        digits = ""
        while len(digits) < max_digits and not self._gone:
            try:
                digit = await asyncio.wait_for(self._digits.get(), seconds)
            except TimeoutError:
                break
            if not digit or digit == terminator:
                break
            digits += digit
        return digits

    async def send_dtmf(self, digits: str) -> None:
        await self._call("POST", "/dtmf", dtmf=digits)

    async def transfer(self, context: str | None, extension: str) -> None:
        if self.placed_by is not None:
            # Anywhere in the dialplan is past the user's call_destinations: a cheap call allowed by them could
            # be moved on to any number.
            raise ForbiddenUser(f"Forbidden user: a call {self.placed_by.name} placed cannot be transferred "
                                "(BlindTransfer)")
        params = {"extension": extension, "priority": "1", **({"context": context} if context else {})}
        await self._call("POST", "/continue", **params)
        self._gone = True

    async def reject(self, reason: str) -> None:
        await self._call("DELETE", reason="busy" if reason == "busy" else "normal")
        self._gone = True

    async def record(self, name: str, max_seconds: float) -> str | None:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._recordings[name] = future
        await self._call("POST", "/record", name=name, format="wav", maxDurationSeconds=str(int(max_seconds)),
                         terminateOn="#", ifExists="overwrite")
        try:
            done = await asyncio.wait_for(asyncio.shield(future), max_seconds + REST_TIMEOUT)
        except TimeoutError:
            done = False
        return name if done else None


class AriApp:
    """One Asterisk server's connection for our Stasis application."""

    def __init__(self, config: AriConfig, backend: SmsBackend, prompter: Prompter, prompts: PromptConfig,
                 ozml: OzmlRunner, ozml_for: Callable[[UserConfig], OzmlRunner]) -> None:
        self._config = config
        self._backend = backend
        self._prompter = prompter
        self._prompts = prompts
        self._ozml = ozml
        # The runner for a call placed by the Call command: its script's SMS go as the user who placed it.
        self._ozml_for = ozml_for
        self._placed: dict[str, tuple[UserConfig, float]] = {}
        self._channels: dict[str, AriChannel] = {}
        self._rest: AriRest | None = None
        self.connected = False

    def __str__(self) -> str:
        return str(self._config)

    async def originate(self, endpoint: str, url: str, caller_id: str | None, user: UserConfig) -> str:
        if self._rest is None or not self.connected:
            raise AriError(f"ARI {self._config} is not connected")
        now = time.monotonic()
        for expired in [key for key, (_, until) in self._placed.items() if until < now]:
            del self._placed[expired]
        # Our own channel id, noted before the request: the StasisStart of the answered call cannot outrun it.
        placed = str(uuid.uuid4())
        self._placed[placed] = (user, now + PLACED_TTL)
        params = {"endpoint": endpoint, "app": self._config.app, "appArgs": f"ozml,{url}", "timeout": "30",
                  "channelId": placed}
        if caller_id:
            params["callerId"] = caller_id
        try:
            body = await self._rest.call("POST", "/channels", **params)
            try:
                channel_id = json.loads(body)["id"]
            except (ValueError, KeyError, TypeError, RecursionError):
                channel_id = None
            # The id goes into replies and log lines: Asterisk's are like 1795570300.8 (or the one we gave).
            if not isinstance(channel_id, str) or not CHANNEL_ID.fullmatch(channel_id):
                raise AriError("ARI answered the originate without a channel id")
        except SmsGatewayError:
            self._placed.pop(placed, None)
            raise
        if channel_id != placed and placed in self._placed:
            self._placed[channel_id] = self._placed.pop(placed)
        return channel_id

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
            rest = self._rest = AriRest(session, self._config)
            backoff = BACKOFF_INITIAL
            reported = False
            while True:
                try:
                    await self._listen(session, rest, group)
                    problem = "closed the event stream"
                except aiohttp.WSServerHandshakeError as exc:
                    problem = (f"refused the ari.conf user {self._config.username!r} (HTTP 401)" if exc.status == 401
                               else f"refused the event stream (HTTP {exc.status})")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    problem = str(exc) or type(exc).__name__
                except Exception:
                    # The connection's error boundary: whatever the peer did ends this connection, never the
                    # daemon; we reconnect as after a drop.
                    log.exception("ARI %s: the event stream failed", self._config)
                    problem = "the event stream failed"
                if self.connected:
                    backoff, reported = BACKOFF_INITIAL, False
                self.connected = False
                for channel in self._channels.values():
                    channel.connection_lost()
                if not reported:
                    log.warning("ARI %s: %s; reconnecting with backoff", self._config, problem)
                    reported = True
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)

    async def _listen(self, session: aiohttp.ClientSession, rest: AriRest, group: asyncio.TaskGroup) -> None:
        url = f"{self._config.base_url}/ari/events"
        params = {"app": self._config.app, "subscribeAll": "false"}
        async with session.ws_connect(url, params=params, headers={"Authorization": rest.auth_header},
                                      heartbeat=30.0, max_msg_size=MAX_EVENT_BYTES) as websocket:
            self.connected = True
            log.info("ARI %s connected", self._config)
            unreadable = 0
            async for message in websocket:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    event = message.json()
                except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                    event = None
                if not isinstance(event, dict):
                    if not unreadable:  # once per connection: a peer sending garbage must not flood the log
                        log.warning("ARI %s sent an event that is not a JSON object; ignoring such events",
                                    self._config)
                    unreadable += 1
                    continue
                self._dispatch(event, rest, group)

    def _dispatch(self, event: dict[str, Any], rest: AriRest, group: asyncio.TaskGroup) -> None:
        description = _object(event.get("channel"))
        channel_id = str(description.get("id", ""))
        if event.get("type") == "StasisStart":
            raw_args = event.get("args")
            args = [str(a) for a in raw_args] if isinstance(raw_args, list) else []
            if len(args) < 2 or not channel_id or channel_id in self._channels:
                # Not a Stasis(sendsms,RECIPIENT,MESSAGE) call, e.g. the other half of a Local channel.
                log.debug("ARI: leaving channel %s alone (args %s)", channel_id, args)
                return
            if len(self._channels) >= MAX_CHANNELS:
                log.warning("ARI %s: %d channels are in the application already; leaving %s alone", self._config,
                            MAX_CHANNELS, channel_id)
                return
            channel = AriChannel(rest, channel_id)
            self._channels[channel_id] = channel
            group.create_task(self._handle(channel, args, description))
            return
        target = str(_object(event.get("playback") or event.get("recording")).get("target_uri", ""))
        if target.startswith("channel:"):
            channel_id = target[len("channel:"):]
        known = self._channels.get(channel_id)
        if known is not None:
            known.on_event(event)

    async def _handle(self, channel: AriChannel, args: list[str], description: dict[str, Any]) -> None:
        try:
            if args[0] == "ozml":  # Stasis(sendsms,ozml,URL)
                caller = str(_object(description.get("caller")).get("number", ""))
                callee = str(_object(description.get("dialplan")).get("exten", ""))
                placed = self._placed.pop(channel.id, None)
                runner = self._ozml
                if placed is not None:
                    channel.placed_by = placed[0]
                    runner = self._ozml_for(placed[0])
                await runner.run_source(channel, CallDetails(channel.id, caller, callee), args[1],
                                        args[2] if len(args) > 2 and args[2] else None)
                return
            params = {k.lower(): v for k, v in parse_qsl(args[2] if len(args) > 2 else "", keep_blank_values=True)}
            params.update(recipient=args[0], message=args[1])
            outcome = await send_sms_from_params(channel, self._backend, self._prompter, self._prompts, params)
            if not channel.hung_up:  # back to the dialplan's next priority, SMS_* variables set
                await channel.continue_in_dialplan()
            log.debug("ARI channel %s: %s", channel.id, outcome.status)
        except SmsGatewayError as exc:
            log.info("ARI channel %s: %s", channel.id, exc.message)
        except Exception:
            log.exception("ARI channel %s failed", channel.id)
        finally:
            self._channels.pop(channel.id, None)
            with contextlib.suppress(Exception):
                channel.connection_lost()
