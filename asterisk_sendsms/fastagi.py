"""The FastAGI server in the daemon: `AGI(agi://host:4573/sendsms?recipient=...&message=...)`. Every
connection is read with bounds and timeouts; a peer that leaves at any point costs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .agi import MAX_LINE, AgiError
from .agi_channel import AgiChannel
from .callflow import Prompter, SmsBackend, send_sms_from_params
from .config import HostPort, PromptConfig
from .errors import ServiceUnavailable, SmsGatewayError
from .ozml_runner import CallDetails, OzmlRunner

__all__ = ["FastAgiServer"]

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0


class FastAgiServer:
    def __init__(self, listen: HostPort, backend: SmsBackend, prompter: Prompter, prompts: PromptConfig,
                 ozml: OzmlRunner) -> None:
        self._listen = listen
        self._backend = backend
        self._prompter = prompter
        self._prompts = prompts
        self._ozml = ozml
        self._server: asyncio.Server | None = None
        self._group: asyncio.TaskGroup | None = None

    async def bind(self) -> None:
        """Take the port now, so the daemon says it is ready only once Asterisk can connect."""
        try:
            self._server = await asyncio.start_server(self._connected, self._listen.host, self._listen.port,
                                                      limit=MAX_LINE, start_serving=False)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot listen for FastAGI on {self._listen}: {exc.strerror}") from None

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._group is not None  # connections are accepted only inside run()
        self._group.create_task(self._serve(reader, writer))

    async def run(self) -> None:
        if self._server is None:
            await self.bind()
        assert self._server is not None
        # The connections end (TaskGroup) before the listening socket closes.
        async with self._server, asyncio.TaskGroup() as group:
            self._group = group
            await self._server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = AgiChannel(reader, writer)
        peer = writer.get_extra_info("peername")
        try:
            environment = await channel.read_environment(HEADER_TIMEOUT)
            script = environment.script
            if script == "sendsms":
                await send_sms_from_params(channel, self._backend, self._prompter, self._prompts, environment.params)
            elif script == "ozml" and environment.params.get("url", "").startswith(("http://", "https://")):
                details = CallDetails.of_agi(environment)
                await self._ozml.run_source(channel, details, environment.params["url"],
                                            environment.params.get("error_url") or None)
            else:
                log.warning("FastAGI request for unknown script %r from %s", script, peer)
                with contextlib.suppress(SmsGatewayError):
                    await channel.set_variable("SMS_STATUS", "FAILED")
                    await channel.set_variable("SMS_ERROR", f"unknown FastAGI script '{script}': use sendsms, or "
                                                            "ozml?url=...")
        except AgiError as exc:
            log.info("FastAGI connection from %s ended: %s", peer, exc.message)
        except Exception:
            log.exception("FastAGI connection from %s failed", peer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
