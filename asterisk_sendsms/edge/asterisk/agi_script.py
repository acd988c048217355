"""The process AGI scripts `AGI(sendsms.agi,RECIPIENT,MESSAGE[,OPTIONS])` and `AGI(ozml.agi,SCRIPT)`. They
ask the daemon over HTTP (never binding to an SMSC), report through SMS_ID/SMS_STATUS/SMS_ERROR, survive the
SIGHUP Asterisk sends at hangup, and fail fast with SMS_STATUS=FAILED when the daemon is down."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote

import aiohttp

from asterisk_sendsms.app.callflow import Changed, send_sms_from_params
from asterisk_sendsms.app.ozml_runner import CallDetails, OzmlRunner
from asterisk_sendsms.app.urlpolicy import UrlPolicy
from asterisk_sendsms.config import AgiScriptConfig, load_agi_config
from asterisk_sendsms.core.errors import RequestError, ServiceUnavailable, SmsGatewayError
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.traffic import CALL_PRIORITY
from asterisk_sendsms.edge.asterisk.agi_channel import AgiChannel, stdio_streams
from asterisk_sendsms.edge.http.client import HttpClient
from asterisk_sendsms.edge.speech import Speaker
from asterisk_sendsms.wire.agi import AgiError, SmsStatus

__all__ = ["HttpBackend", "main", "ozml_main"]

log = logging.getLogger("sendsms.agi")

CONFIG_ENV = "ASTERISK_SENDSMS_AGI_CONFIG"
CONFIG_VARIABLE = "SENDSMS_CONFIG"
DEFAULT_CONFIG = Path("/etc/asterisk-sendsms/agi.toml")


class HttpBackend:
    """The daemon's JSON API as the call flow's `SmsBackend`."""

    def __init__(self, session: aiohttp.ClientSession, config: AgiScriptConfig) -> None:
        self._session = session
        self._config = config
        credentials = f"{config.username}:{config.password}".encode()
        self._auth = "Basic " + base64.b64encode(credentials).decode("ascii")

    async def _call(self, method: str, path: str, body: dict[str, str | None] | None = None) -> dict[str, object]:
        url = f"{self._config.url}{path}"
        try:
            async with self._session.request(method, url, json=body, headers={"Authorization": self._auth},
                                             timeout=aiohttp.ClientTimeout(total=self._config.timeout)) as reply:
                data = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise ServiceUnavailable(f"the asterisk-sendsms daemon at {self._config.url} is unreachable: "
                                     f"{exc or type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise ServiceUnavailable(f"unexpected answer from {url}")
        if reply.status >= 400:
            raise RequestError(str(data.get("error", f"HTTP {reply.status}")))
        return data

    async def send(self, recipient: str, text: str, sender: str | None, report_url: str | None) -> str:
        data = await self._call("POST", "/api/messages", {"recipient": recipient, "text": text, "sender": sender,
                                                          "delivery_report_url": report_url,
                                                          "priority": CALL_PRIORITY.value})
        return str(data["sms_id"])

    async def state(self, sms_id: str) -> tuple[State, str]:
        data = await self._call("GET", f"/api/messages/{quote(sms_id)}")
        error = " ".join(filter(None, (str(data.get("error_code", "")), str(data.get("error_text", "")))))
        return State(str(data["state"])), error

    @asynccontextmanager
    async def watching(self, sms_id: str) -> AsyncIterator[Changed]:
        """Nothing tells this process of a change: the call flow polls."""
        yield asyncio.sleep


async def _config_path(channel: AgiChannel) -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    from_channel = await channel.get_variable(CONFIG_VARIABLE)
    return Path(from_channel) if from_channel else DEFAULT_CONFIG


async def _fail(channel: AgiChannel, error: str) -> None:
    log.error("SendSms failed: %s", error)
    for name, value in (("SMS_ID", ""), ("SMS_STATUS", SmsStatus.FAILED), ("SMS_ERROR", error)):
        try:
            await channel.set_variable(name, value)
        except SmsGatewayError:
            return


async def run(action: str) -> int:
    """`sendsms`: AGI(sendsms.agi,RECIPIENT,MESSAGE[,OPTIONS]); `ozml`: AGI(ozml.agi,URL_PATH_OR_XML)."""
    reader, writer = await stdio_streams()
    channel = AgiChannel(reader, writer)
    # Asterisk sends SIGHUP at hangup; the default action would kill us before the work is handed over.
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, channel.mark_hung_up)
    try:
        environment = await channel.read_environment()
        args = [*environment.args, "", "", ""]
        try:
            config = load_agi_config(await _config_path(channel))
        except SmsGatewayError as exc:
            await _fail(channel, f"AGI configuration: {exc.message}")
            return 0
        async with aiohttp.ClientSession() as session:
            backend = HttpBackend(session, config)
            speaker = Speaker(config.speech)
            if action == "ozml":
                details = CallDetails.of_agi(environment)
                policy = UrlPolicy.of(config.ozml_allowed_hosts, config.ozml_allowed_networks)
                runner = OzmlRunner(backend, speaker, config.prompts, policy, HttpClient, config.record_dir,
                                    config.ozml_unknown_ends_call)
                await runner.run_source(channel, details, args[0], args[1] or None)
                return 0
            params = {k.lower(): v for k, v in parse_qsl(args[2], keep_blank_values=True)}
            params.update(recipient=args[0], message=args[1])
            outcome = await send_sms_from_params(channel, backend, speaker, config.prompts, params)
    except AgiError as exc:
        log.error("AGI conversation failed: %s", exc.message)
        return 0
    print(f"sendsms.agi: {outcome.status} {outcome.sms_id} {outcome.error}".rstrip(), file=sys.stderr)
    return 0


def main(action: str = "sendsms") -> int:
    # Until the event loop takes SIGHUP over, a hangup must not kill the script either.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"{action}.agi: %(message)s")
    return asyncio.run(run(action))


def ozml_main() -> int:
    return main("ozml")


if __name__ == "__main__":
    sys.exit(main())
