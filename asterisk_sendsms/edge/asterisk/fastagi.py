"""The FastAGI server in the daemon: `AGI(agi://host:4573/sendsms?recipient=...&message=...)`. Peers outside
the allow-list are disconnected before a byte is read; with a secret configured, a request proves it before
anything is done for it. Every connection is read with bounds and timeouts; a peer that leaves at any point
costs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
from collections.abc import Mapping, Sequence

from asterisk_sendsms.app.auth import client_allowed
from asterisk_sendsms.app.callflow import Prompter, SmsBackend, send_sms_from_params
from asterisk_sendsms.app.ozml_runner import CallDetails, OzmlRunner
from asterisk_sendsms.config import HostPort, Network, PromptConfig, is_loopback
from asterisk_sendsms.core.errors import ServiceUnavailable, SmsGatewayError
from asterisk_sendsms.edge.asterisk.agi_channel import AgiChannel
from asterisk_sendsms.wire.agi import MAX_LINE, AgiEnvironment, AgiError, SmsStatus

__all__ = ["FastAgiServer"]

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
# Each call holds one connection while its flow runs (prompts, waiting for a receipt): a busy Asterisk may
# open hundreds at once, and connections that arrive in a burst wait in the backlog instead of being refused
# (the kernel caps it at net.core.somaxconn).
BACKLOG = 1024
# Beyond this many open connections new ones are closed at once: a peer holding idle connections cannot take
# every file descriptor of the daemon (which its HTTP API needs too).
MAX_CONNECTIONS = 2000
SECRET_PARAM = "secret"  # noqa: S105 - the name of the URL parameter, not a secret
SECRET_VARIABLE = "SENDSMS_SECRET"  # noqa: S105 - a channel variable name
# One line per kind of refusal and peer per this many seconds: a flood of refused connections cannot
# flood the log.
REFUSAL_LOG_INTERVAL = 60.0
MAX_REFUSALS_TRACKED = 1024


class _RefusalLog:
    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}

    def warn(self, kind: str, peer: str, message: str) -> None:
        now = time.monotonic()
        key = (kind, peer)
        if now - self._last.get(key, -REFUSAL_LOG_INTERVAL) < REFUSAL_LOG_INTERVAL:
            return
        if len(self._last) >= MAX_REFUSALS_TRACKED:
            self._last.clear()
        self._last[key] = now
        log.warning("%s (further ones from %s are not logged for %.0f s)", message, peer, REFUSAL_LOG_INTERVAL)


def _peer_address(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class FastAgiServer:
    def __init__(self, listen: HostPort, backend: SmsBackend, prompter: Prompter, prompts: PromptConfig,
                 ozml: OzmlRunner, allowed_clients: Sequence[Network], secret: str | None) -> None:
        self._listen = listen
        self._backend = backend
        self._prompter = prompter
        self._prompts = prompts
        self._ozml = ozml
        self._allowed = tuple(allowed_clients)
        self._secret = secret.encode() if secret is not None else None
        self._socket: socket.socket | None = None
        self._group: asyncio.TaskGroup | None = None
        self._open = 0
        self._refusals = _RefusalLog()

    async def bind(self) -> None:
        """Take the port and listen now: Asterisk's connections wait in the backlog until `run` accepts them, so
        the daemon may say it is ready before its tasks start (a socket only bound would refuse them)."""
        host, port = self._listen.host, self._listen.port
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)
            family, _, _, _, address = infos[0]
            self._socket = socket.create_server(address[:2], family=family, backlog=BACKLOG)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot listen for FastAGI on {self._listen}: {exc.strerror or exc}") from None
        if self._secret is None and not is_loopback(host):
            log.warning("FastAGI listens on %s without asterisk.fastagi_secret: every host in "
                        "asterisk.fastagi_allowed_clients (%s) may send SMS through it", self._listen,
                        ", ".join(str(net) for net in self._allowed) or "any address")

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._group is not None  # connections are accepted only inside run()
        address = _peer_address(writer.get_extra_info("peername"))
        # A peer whose address cannot be read ("unknown") is refused, unless the allow-list is empty (any).
        if not client_allowed(address, self._allowed):
            self._refusals.warn("address", address, f"FastAGI connection from {address} refused: "
                                                    "not in asterisk.fastagi_allowed_clients")
            writer.transport.abort()
            return
        if self._open >= MAX_CONNECTIONS:
            self._refusals.warn("full", "anyone", f"FastAGI connection from {address} refused: "
                                                  f"{MAX_CONNECTIONS} connections are open")
            writer.transport.abort()
            return
        self._open += 1
        self._group.create_task(self._serve(reader, writer, address))

    async def run(self) -> None:
        if self._socket is None:
            await self.bind()
        assert self._socket is not None
        # asyncio calls listen() again: with our backlog, not its default of 100.
        server = await asyncio.start_server(self._connected, sock=self._socket, limit=MAX_LINE, backlog=BACKLOG,
                                            start_serving=False)
        try:
            # The connections end (TaskGroup) before the listening socket closes.
            async with server, asyncio.TaskGroup() as group:
                self._group = group
                await server.serve_forever()
        finally:
            self._socket = None  # closed with the server: run again (supervision), it binds again

    async def _authorised(self, channel: AgiChannel, params: Mapping[str, str], address: str) -> bool:
        if self._secret is None:
            return True
        given = params.get(SECRET_PARAM)
        if given is None:
            # Not in the URL: the dialplan may hold it in a variable (a [globals] one is not in the verbose log).
            given = await channel.get_variable(SECRET_VARIABLE)
        if given is not None and hmac.compare_digest(given.encode(), self._secret):
            return True
        self._refusals.warn("secret", address, f"FastAGI request from {address} refused: the secret "
                                               f"is {'wrong' if given is not None else 'missing'}")
        with contextlib.suppress(SmsGatewayError):
            await channel.set_variable("SMS_STATUS", SmsStatus.FAILED)
            await channel.set_variable("SMS_ERROR", "FastAGI request refused: the secret is missing or wrong")
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        channel = AgiChannel(reader, writer)
        try:
            environment = await channel.read_environment(HEADER_TIMEOUT)
            params = environment.params
            if await self._authorised(channel, params, address):
                await self._run_script(channel, environment, {k: v for k, v in params.items() if k != SECRET_PARAM},
                                       address)
        except AgiError as exc:
            log.info("FastAGI connection from %s ended: %s", address, exc.message)
        except Exception:
            log.exception("FastAGI connection from %s failed", address)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _run_script(self, channel: AgiChannel, environment: AgiEnvironment, params: dict[str, str],
                          address: str) -> None:
        script = environment.script
        if script == "sendsms":
            await send_sms_from_params(channel, self._backend, self._prompter, self._prompts, params)
        elif script == "ozml" and params.get("url", "").startswith(("http://", "https://")):
            await self._ozml.run_source(channel, CallDetails.of_agi(environment), params["url"],
                                        params.get("error_url") or None)
        else:
            log.warning("FastAGI request for unknown script %r from %s", script, address)
            with contextlib.suppress(SmsGatewayError):
                await channel.set_variable("SMS_STATUS", SmsStatus.FAILED)
                await channel.set_variable("SMS_ERROR", f"unknown FastAGI script '{script}': use sendsms, or "
                                                        "ozml?url=...")
