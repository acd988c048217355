"""Runs OzML on a call: each command against the call-control interface (AGI or ARI), SendSms through the
service, scripts fetched with the call's details, DTMF posted to ForwardToUrl and the answer run next."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from asterisk_sendsms.app.callflow import CallControl, Prompter, SmsBackend, SpeechError, agi_status
from asterisk_sendsms.app.http import HttpError, HttpSession, OpenHttp
from asterisk_sendsms.app.urlpolicy import UrlPolicy
from asterisk_sendsms.config import PromptConfig
from asterisk_sendsms.core.errors import SmsGatewayError
from asterisk_sendsms.wire.agi import AgiEnvironment, SmsStatus
from asterisk_sendsms.wire.ozeki import form_encode
from asterisk_sendsms.wire.ozml import (
    BlindTransfer,
    Command,
    Delay,
    GoTo,
    Hangup,
    OzmlError,
    Play,
    Record,
    Reject,
    SendDtmf,
    SendSms,
    Speak,
    Unknown,
    UserInput,
    parse_ozml,
)

__all__ = ["CallDetails", "OzmlCall", "OzmlRunner"]

log = logging.getLogger(__name__)

MAX_SCRIPTS = 50  # GoTo/UserInput answers followed in one call: a loop between two URLs ends here
FETCH_TIMEOUT = 10.0
MAX_SCRIPT_BYTES = 256 * 1024


class OzmlCall(CallControl, Protocol):
    """What OzML needs of a channel beyond the SendSms flow."""

    async def collect_digits(self, seconds: float, max_digits: int, terminator: str) -> str:
        """DTMF until `max_digits`, the terminator (not included) or `seconds` of silence."""
        ...

    async def send_dtmf(self, digits: str) -> None: ...

    async def transfer(self, context: str | None, extension: str) -> None:
        """Leave the script for a dialplan extension."""
        ...

    async def reject(self, reason: str) -> None: ...

    async def record(self, name: str, max_seconds: float) -> str | None:
        """Record the caller into a file; its path, or None if nothing was recorded."""
        ...


@dataclass(frozen=True, slots=True)
class CallDetails:
    call_id: str
    caller: str
    callee: str

    @classmethod
    def of_agi(cls, environment: AgiEnvironment) -> CallDetails:
        return cls(environment.variables.get("agi_uniqueid", ""), environment.caller,
                   environment.variables.get("agi_dnid", ""))

    def form(self, notification: str, **extra: str) -> dict[str, str]:
        return {"NotificationName": notification, "CallId": self.call_id, "Caller": self.caller,
                "Callee": self.callee, **extra}


def _read_script(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_SCRIPT_BYTES + 1)
    except OSError as exc:
        raise OzmlError(f"cannot read the script {path}: {exc.strerror}") from None


class _Stop(Exception):
    """The script ended the call (Hangup, Reject, BlindTransfer)."""


class OzmlRunner:
    def __init__(self, backend: SmsBackend, prompter: Prompter, prompts: PromptConfig, policy: UrlPolicy,
                 open_http: OpenHttp, record_dir: str = "", unknown_ends_call: bool = False) -> None:
        self._backend = backend
        self._open_http = open_http
        self._policy = policy  # every script URL, the dialplan's included, goes where it allows
        self._prompter = prompter
        self._prompts = prompts
        self._record_dir = record_dir  # AGI: a directory of ours; ARI: "" (Asterisk keeps recordings)
        self._unknown_ends_call = unknown_ends_call

    async def run_source(self, call: OzmlCall, details: CallDetails, source: str, error_url: str | None = None
                         ) -> None:
        """Run a script given as a URL (fetched as the Ozeki phone system does: a POST with CallConnected), a
        file path, or inline XML, following GoTo and UserInput answers. If it cannot be had or run, the OzML
        that `error_url` answers to a POST of the error runs instead; failing that, the call ends politely."""
        session = self._open_http(self._policy, FETCH_TIMEOUT, max_body=MAX_SCRIPT_BYTES)
        try:
            await self._run_source(call, details, source, error_url, session)
        finally:
            await session.close()

    async def _run_source(self, call: OzmlCall, details: CallDetails, source: str, error_url: str | None,
                          session: HttpSession) -> None:
        await self._quietly(call.answer)  # OzML runs on a connected call, as on the Ozeki phone system
        try:
            await self._follow(call, details, await self._load(session, details, source), session)
            return
        except _Stop:
            return
        except SmsGatewayError as exc:  # the script, or Asterisk refusing one of its commands
            if call.hung_up:
                return
            log.warning("OzML on call %s: %s", details.call_id, exc.message)
            error = exc.message
        if error_url:
            try:
                commands = await self.fetch(session, error_url, details.form("Error", Error=error))
                await self._follow(call, details, commands, session)
                return
            except _Stop:
                return
            except OzmlError as exc:
                log.warning("OzML error script for call %s: %s", details.call_id, exc.message)
        if self._prompts.failed and not call.hung_up:
            with contextlib.suppress(SmsGatewayError):
                await call.play(await self._prompter.prompt(self._prompts.failed))
        await self._quietly(call.hangup)

    async def _load(self, session: HttpSession, details: CallDetails, source: str
                    ) -> tuple[Command, ...]:
        if source.lstrip().startswith("<"):
            return parse_ozml(source)
        if source.startswith("/"):
            return parse_ozml(_read_script(Path(source)))
        return await self.fetch(session, source, details.form("CallConnected"))

    @staticmethod
    async def fetch(session: HttpSession, url: str, form: Mapping[str, str]) -> tuple[Command, ...]:
        """POST the call's details to `url` and parse the OzML it answers (the whole answer, however many
        reads it takes, up to MAX_SCRIPT_BYTES)."""
        try:
            response = await session.request("POST", url, form_encode(form))
        except HttpError as exc:
            raise OzmlError(f"cannot fetch the script at {url[:200]}: {exc}") from None
        if response.status != 200:
            raise OzmlError(f"{url[:200]} answered HTTP {response.status}")
        return parse_ozml(response.body)

    async def _follow(self, call: OzmlCall, details: CallDetails, commands: tuple[Command, ...],
                      session: HttpSession) -> None:
        """Run a script and the scripts it leads to; raises `_Stop` when one ends the call."""
        for _ in range(MAX_SCRIPTS):
            following = await self._run_script(call, details, commands, session)
            if following is None:
                return
            commands = following
        raise OzmlError(f"more than {MAX_SCRIPTS} scripts followed in one call")

    @staticmethod
    async def _quietly(operation: Callable[[], Awaitable[object]]) -> None:
        """Channel operations whose failure (the caller is gone) must not stop the script's bookkeeping."""
        try:
            await operation()
        except SmsGatewayError as exc:
            log.info("call operation skipped: %s", exc.message)

    async def _say(self, call: OzmlCall, command: Speak | Play) -> None:
        if isinstance(command, Play):
            await call.play(command.sound)
            return
        try:
            sound = await self._prompter.prompt(command.text, command.voice)
        except SpeechError as exc:  # a missing voice must not cut the script short
            log.warning("OzML <Speak> skipped: %s", exc.message)
            return
        await call.play(sound)

    async def _run_script(self, call: OzmlCall, details: CallDetails, commands: tuple[Command, ...],
                          session: HttpSession) -> tuple[Command, ...] | None:
        """Run commands in order; returns the script to continue with (GoTo, UserInput, Record), or None."""
        for command in commands:
            if call.hung_up and not isinstance(command, SendSms):
                raise _Stop
            match command:
                case Speak() | Play():
                    await self._say(call, command)
                case SendSms():
                    await self._send_sms(call, command)
                case Delay(seconds):
                    await asyncio.sleep(seconds)
                case Hangup():
                    await self._quietly(call.hangup)
                    raise _Stop
                case Reject(reason):
                    await self._quietly(functools.partial(call.reject, reason))
                    raise _Stop
                case SendDtmf(digits):
                    await call.send_dtmf(digits)
                case BlindTransfer(destination):
                    context, _, extension = destination.rpartition(",")
                    await call.transfer(context or None, extension)
                    raise _Stop
                case GoTo(url):
                    return await self.fetch(session, url, details.form("CallConnected"))
                case UserInput():
                    for prompt in command.prompt:
                        if isinstance(prompt, Speak | Play):
                            await self._say(call, prompt)
                    digits = await call.collect_digits(command.timeout, command.max_digits, command.terminator)
                    return await self.fetch(session, command.forward_url, details.form("DtmfEntered", Dtmf=digits))
                case Record(forward_url, max_seconds):
                    name = f"ozml-{details.call_id}".replace("/", "_")
                    path = await call.record(f"{self._record_dir}/{name}" if self._record_dir else name, max_seconds)
                    if forward_url:
                        return await self.fetch(session, forward_url,
                                                details.form("RecordCompleted", RecordPath=path or ""))
                case Unknown(tag, line):
                    log.warning("OzML on call %s: unknown command <%s> at line %d%s", details.call_id, tag, line,
                                "; ending the call" if self._unknown_ends_call else "; skipped")
                    if self._unknown_ends_call:
                        await self._quietly(call.hangup)
                        raise _Stop
        return None

    async def _send_sms(self, call: OzmlCall, command: SendSms) -> None:
        try:
            sms_id = await self._backend.send(command.recipient, command.text, command.sender, command.report_url)
            state, error = await self._backend.state(sms_id)
            status = agi_status(state)
        except SmsGatewayError as exc:
            sms_id, status, error = "", SmsStatus.FAILED, exc.message
        log.info("OzML SendSms to %s: %s %s", command.recipient, status, sms_id)
        shown_error = error if status is SmsStatus.FAILED else ""
        for name, value in (("SMS_ID", sms_id), ("SMS_STATUS", status), ("SMS_ERROR", shown_error)):
            await self._quietly(functools.partial(call.set_variable, name, value))
