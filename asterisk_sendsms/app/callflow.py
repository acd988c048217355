"""The SendSms call flow shared by AGI, FastAGI and ARI: tell the caller, send, wait as asked, set
SMS_ID/SMS_STATUS/SMS_ERROR, tell the outcome, hang up if asked. A failed SMS never breaks the call."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from asterisk_sendsms.config import PromptConfig
from asterisk_sendsms.core.errors import InvalidParameter, SmsGatewayError
from asterisk_sendsms.core.lifecycle import State, is_final
from asterisk_sendsms.wire.agi import SmsStatus

__all__ = [
    "CallControl",
    "CallOutcome",
    "SmsBackend",
    "SmsCallOptions",
    "SpeechError",
    "WaitFor",
    "agi_status",
    "parse_call_options",
    "run_send_sms",
]

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
MAX_WAIT = 300.0
COMMAND = "SendSms"


class CallControl(Protocol):
    """What the flow needs of a channel; AGI and ARI implement it. Methods raise `AgiHangup`-like
    `SmsGatewayError`s when the channel is gone; the flow then carries on without it."""

    @property
    def hung_up(self) -> bool: ...

    async def answer(self) -> None: ...

    async def play(self, sound: str) -> bool:
        """Play a sound (path without extension); False if Asterisk could not play it."""
        ...

    async def set_variable(self, name: str, value: str) -> None: ...

    async def hangup(self) -> None: ...


class SpeechError(SmsGatewayError):
    """A prompt could not be made; the call goes on without it."""


class Prompter(Protocol):
    async def prompt(self, text: str, voice: str | None = None) -> str:
        """The sound to play for `text`; raises `SpeechError` when it cannot be made."""
        ...


class SmsBackend(Protocol):
    """The daemon's service, in process (FastAGI, ARI) or over HTTP (the AGI script)."""

    async def send(self, recipient: str, text: str, sender: str | None, report_url: str | None) -> str: ...

    async def state(self, sms_id: str) -> tuple[State, str]:
        """The message's state and error text."""
        ...

    def watching(self, sms_id: str) -> AbstractAsyncContextManager[Changed]:
        """While the block runs, a function that returns once the message may have changed state, or after
        the seconds it is given."""
        ...


Changed = Callable[[float], Awaitable[None]]


class WaitFor(StrEnum):
    NONE = "none"  # SMS_STATUS=QUEUED once accepted
    SUBMITTED = "submitted"  # SENT once the SMSC took it
    DELIVERED = "delivered"  # DELIVERED once the receipt says so


@dataclass(frozen=True, slots=True)
class SmsCallOptions:
    announce: bool = True
    before: str | None = None  # None: the configured prompt
    after: str | None = None
    failed: str | None = None
    wait: WaitFor = WaitFor.SUBMITTED
    timeout: float = 10.0
    hangup: bool = False
    sender: str | None = None
    report_url: str | None = None
    voice: str | None = None


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("", "1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise InvalidParameter(name, COMMAND, f"expected yes or no, got {value!r}")


KNOWN_OPTIONS = ("announce", "before", "after", "failed", "wait", "timeout", "hangup", "sender", "report_url",
                 "deliveryreporturl", "voice", "recipient", "message")


def parse_call_options(params: Mapping[str, str]) -> SmsCallOptions:
    """Options as `name=value` pairs (the FastAGI query, or `wait=delivered&hangup=yes` as the AGI's third
    argument). Unknown names are refused so that a typo does not pass silently."""
    for name in params:
        if name not in KNOWN_OPTIONS:
            raise InvalidParameter(name, COMMAND, f"unknown option (known: {', '.join(KNOWN_OPTIONS[:-2])})")
    try:
        wait = WaitFor(params.get("wait", WaitFor.SUBMITTED.value).lower())
    except ValueError:
        raise InvalidParameter("wait", COMMAND, "expected none, submitted or delivered") from None
    try:
        timeout = float(params.get("timeout", "10"))
    except ValueError:
        raise InvalidParameter("timeout", COMMAND, "expected seconds") from None
    if not 0 <= timeout <= MAX_WAIT:
        raise InvalidParameter("timeout", COMMAND, f"expected 0 to {MAX_WAIT:g} seconds")
    return SmsCallOptions(
        announce=_flag(params["announce"], "announce") if "announce" in params else True,
        before=params.get("before"), after=params.get("after"), failed=params.get("failed"),
        wait=wait, timeout=timeout,
        hangup=_flag(params["hangup"], "hangup") if "hangup" in params else False,
        sender=params.get("sender") or None,
        report_url=params.get("report_url") or params.get("deliveryreporturl") or None,
        voice=params.get("voice") or None)


def agi_status(state: State) -> SmsStatus:
    if state in (State.SCHEDULED, State.ACCEPTED, State.QUEUED):
        return SmsStatus.QUEUED
    if state in (State.SUBMITTED, State.SENT, State.ACKNOWLEDGED):
        return SmsStatus.SENT
    if state is State.DELIVERED:
        return SmsStatus.DELIVERED
    return SmsStatus.FAILED


@dataclass(frozen=True, slots=True)
class CallOutcome:
    sms_id: str
    status: SmsStatus
    error: str


async def _wait(backend: SmsBackend, sms_id: str, options: SmsCallOptions) -> tuple[State, str]:
    deadline = time.monotonic() + options.timeout
    state, error = State.ACCEPTED, ""
    # Watched from before the first read, so that no change between a read and the wait is missed. The poll
    # stays for changes this process does not see (another node's dispatcher).
    async with backend.watching(sms_id) as changed:
        while True:
            state, error = await backend.state(sms_id)
            reached = (is_final(state) or (options.wait is WaitFor.SUBMITTED and state is State.SUBMITTED)
                       or options.wait is WaitFor.NONE)
            if reached or time.monotonic() >= deadline:
                return state, error
            await changed(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


class _Channel:
    """Channel operations that stop being attempted once the caller is gone."""

    def __init__(self, call: CallControl, prompter: Prompter, voice: str | None) -> None:
        self.call = call
        self.prompter = prompter
        self.voice = voice

    async def run(self, what: str, operation: Callable[[], Awaitable[object]], needs_caller: bool = True) -> None:
        """Sounds and hangups need the caller; variables are set even after a hangup, for the `h` extension."""
        if needs_caller and self.call.hung_up:
            return
        try:
            await operation()
        except SmsGatewayError as exc:
            log.info("%s skipped: %s", what, exc.message)

    async def say(self, text: str) -> None:
        if not text or self.call.hung_up:
            return
        try:
            sound = await self.prompter.prompt(text, self.voice)
        except SmsGatewayError as exc:
            log.warning("prompt %r not available: %s", text[:40], exc.message)
            return
        await self.run("prompt", lambda: self.call.play(sound))


async def run_send_sms(call: CallControl, backend: SmsBackend, prompter: Prompter, prompts: PromptConfig,
                       recipient: str, text: str, options: SmsCallOptions) -> CallOutcome:
    channel = _Channel(call, prompter, options.voice)
    if options.announce:
        await channel.run("answer", call.answer)
        await channel.say(prompts.before if options.before is None else options.before)
    try:
        sms_id = await backend.send(recipient, text, options.sender, options.report_url)
    except SmsGatewayError as exc:
        outcome = CallOutcome("", SmsStatus.FAILED, exc.message)
    else:
        try:
            state, error = await _wait(backend, sms_id, options)
            outcome = CallOutcome(sms_id, agi_status(state), error if agi_status(state) is SmsStatus.FAILED else "")
        except SmsGatewayError as exc:
            # Accepted (it will be sent) but its progress is unknown: say so without calling it failed.
            outcome = CallOutcome(sms_id, SmsStatus.QUEUED, f"status unknown: {exc.message}")
    for name, value in (("SMS_ID", outcome.sms_id), ("SMS_STATUS", outcome.status), ("SMS_ERROR", outcome.error)):
        await channel.run(f"set {name}", functools.partial(call.set_variable, name, value), needs_caller=False)
    if options.announce:
        if outcome.status is SmsStatus.FAILED:
            await channel.say(prompts.failed if options.failed is None else options.failed)
        else:
            await channel.say(prompts.after if options.after is None else options.after)
    if options.hangup:
        await channel.run("hangup", call.hangup)
    log.info("SendSms to %s on a call: %s %s%s", recipient, outcome.status, outcome.sms_id,
             f" ({outcome.error})" if outcome.error else "")
    return outcome


async def send_sms_from_params(call: CallControl, backend: SmsBackend, prompter: Prompter, prompts: PromptConfig,
                               params: Mapping[str, str]) -> CallOutcome:
    """The flow with its recipient, message and options given as name=value pairs; bad options fail the
    SMS (SMS_STATUS=FAILED, SMS_ERROR says why), never the call."""
    try:
        options = parse_call_options(params)
        recipient, text = params.get("recipient", ""), params.get("message", "")
        if not recipient.strip():
            raise InvalidParameter("recipient", COMMAND)
        if not text:
            raise InvalidParameter("message", COMMAND, "the message text is empty")
    except InvalidParameter as exc:
        log.info("SendSms on a call refused: %s", exc.message)
        channel = _Channel(call, prompter, None)
        for name, value in (("SMS_ID", ""), ("SMS_STATUS", SmsStatus.FAILED), ("SMS_ERROR", exc.message)):
            await channel.run(f"set {name}", functools.partial(call.set_variable, name, value), needs_caller=False)
        return CallOutcome("", SmsStatus.FAILED, exc.message)
    return await run_send_sms(call, backend, prompter, prompts, recipient, text, options)
