"""The SMPP transport in a process of its own: `SmppProcess`, the daemon's side, is a `Transport` that hands
each submit to the child and stores the receipts and incoming SMS the child hands back; `main` is the child,
which runs `SmppTransport` as the daemon would. The daemon's event loop is busy with HTTP requests and the
store: at a small window, each of its turns between a response and the next submit is throughput lost, while
a process of its own answers a response with the next submit at once, on the other core."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

import uvloop

from asterisk_sendsms.app.transport import TransportHealth, TransportSink
from asterisk_sendsms.config import SmppSettings
from asterisk_sendsms.core.encoding import Coding, EncodedMessage, Segment
from asterisk_sendsms.core.errors import PermanentSubmitError, ServiceUnavailable, SmsGatewayError, TransientSubmitError
from asterisk_sendsms.core.model import IncomingPart, OutboundMessage, PartOutcome, Receipt
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.edge.smpp.transport import UNBIND_GRACE, SmppTransport
from asterisk_sendsms.ops.logs import configure_logging
from asterisk_sendsms.runtime.children import child_command, exit_description, hello_frame, read_hello
from asterisk_sendsms.runtime.intake import FrameReader, frame
from asterisk_sendsms.runtime.supervision import keep_running

__all__ = ["SmppProcess"]

log = logging.getLogger(__name__)

# The child unbinds (waiting at most UNBIND_GRACE for the SMSC) and exits; one still running after this is
# killed.
STOP_GRACE = UNBIND_GRACE + 3.0
# How often the child looks at its transport's health and tells the daemon what changed: a bind is known to
# the dispatcher this long after it happens, at the latest.
HEALTH_EVERY = 0.05
# Each frame on the link is a system call on either side and a wake-up of the other: one per submit cost the
# SMPP process an eighth of its time at window 1. What nobody waits for waits this long for company.
LINGER = 0.001


class _Channel(asyncio.Protocol):
    """One end of the link: what is sent within a turn of the event loop leaves as one frame (a list of
    tuples), and what nobody waits for (outcomes of submits, health, new submits behind a backlog) waits up to
    LINGER for company; each tuple that arrives goes to `heard`."""

    def __init__(self, heard: Callable[[tuple[Any, ...]], None]) -> None:
        self._heard = heard
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._unsent: list[tuple[Any, ...]] = []
        self._flushing: asyncio.Handle | None = None
        self._lingering = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, item: tuple[Any, ...], linger: bool = False) -> None:
        self._unsent.append(item)
        if self._flushing is not None and (linger or not self._lingering):
            return
        if self._flushing is not None:
            self._flushing.cancel()
        loop = asyncio.get_running_loop()
        self._flushing = loop.call_later(LINGER, self._flush) if linger else loop.call_soon(self._flush)
        self._lingering = linger

    def send_frame(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _flush(self) -> None:
        self._flushing = None
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(unsent))

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except ValueError as exc:
            log.error("SMPP process link: %s; closing it", exc)
            self.close()
            return
        for items in frames:
            for item in items:
                self._heard(item)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)


class SmppProcess:
    """The daemon's side: what `SmppTransport` offers, with the connection in a child process that is started
    again when it exits. A submit the child had when it exited fails as a dropped connection does (tried again
    later), and a receipt it had not yet handed over is sent again by the SMSC, as it was never acknowledged."""

    kind = "smpp"

    def __init__(self, name: str, settings: SmppSettings, log_setup: tuple[str, str]) -> None:
        self.name = name
        self.capacity = settings.window
        self.expects_receipts = settings.receipts
        self._hello = hello_frame((name, settings, *log_setup))
        self._where = f"{settings.host}:{settings.port} window {settings.window}"
        self._channel: _Channel | None = None
        self._health = TransportHealth(name, self.kind, False, "not started", self._where)
        self._submits: dict[int, asyncio.Future[list[str]]] = {}
        self._numbers = itertools.count(1)
        self._sink: TransportSink | None = None
        self._storing: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self._health.ready

    def health(self) -> TransportHealth:
        return self._health

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        """The SMSC keeps receipts for us across our restart; nothing to do."""

    async def run(self, sink: TransportSink) -> None:
        self._sink = sink
        await keep_running(self._run_once, f"SMPP {self.name} process")

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        channel = self._channel
        if channel is None:
            raise TransientSubmitError(f"the process of SMPP {self.name} is not running", "NOT_CONNECTED")
        number = next(self._numbers)
        answer: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._submits[number] = answer
        channel.send(("submit", number, message.sms_id, message.sender, message.recipient, message.text,
                      message.previous_attempts, message.expires_at, message.priority.value, message.fair_rank,
                      message.smsc_validity, encoded.coding.value,
                      [(segment.text, segment.payload) for segment in encoded.segments]), linger=True)
        try:
            return await answer
        except asyncio.CancelledError:
            if not answer.done() and channel is self._channel:
                channel.send(("cancel", number))
            raise
        finally:
            self._submits.pop(number, None)

    async def _run_once(self) -> str:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                *child_command("asterisk_sendsms.runtime.smpp_child", "--link", str(theirs.fileno())),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            _, channel = await loop.create_unix_connection(lambda: _Channel(self._heard), sock=ours)
        except BaseException:
            ours.close()  # the child sees its link end and exits
            raise
        channel.send_frame(self._hello)
        self._channel = channel
        self._health = TransportHealth(self.name, self.kind, False, "starting", self._where)
        try:
            return exit_description(await process.wait())
        except asyncio.CancelledError:
            # The daemon is stopping, the dispatcher's submits are answered: the child unbinds and exits.
            channel.send(("stop",))
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("SMPP %s process (pid %d) did not stop within %.0f s: killed", self.name, process.pid,
                            STOP_GRACE)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            raise
        finally:
            self._channel = None
            channel.close()
            self._health = TransportHealth(self.name, self.kind, False, "process exited", self._where)
            for answer in self._submits.values():
                if not answer.done():
                    answer.set_exception(TransientSubmitError(f"the process of SMPP {self.name} exited",
                                                              "CONNECTION_LOST"))

    def _heard(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "done":
            answer = self._submits.get(item[1])
            if answer is not None and not answer.done():
                answer.set_result(list(item[2]))
        elif kind == "failed":
            _, number, permanent, message, code = item
            answer = self._submits.get(number)
            if answer is not None and not answer.done():
                answer.set_exception((PermanentSubmitError if permanent else TransientSubmitError)(message, code))
        elif kind == "health":
            _, ready, state, detail, in_flight = item
            self._health = TransportHealth(self.name, self.kind, ready, state, detail, in_flight)
        elif kind in ("receipt", "incoming"):
            task = asyncio.get_running_loop().create_task(self._store(item))
            self._storing.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._storing.discard)

    async def _store(self, item: tuple[Any, ...]) -> None:
        """Store a receipt or an incoming SMS and tell the child, which acknowledges it to the SMSC only then."""
        kind, number, *fields = item
        assert self._sink is not None
        error: str | None = None
        try:
            if kind == "receipt":
                transport, smsc_id, outcome, error_code, at = fields
                await self._sink.on_receipt(Receipt(transport, smsc_id, PartOutcome(outcome), error_code, at))
            else:
                await self._sink.on_incoming(IncomingPart(*fields))
        except SmsGatewayError as exc:
            error = exc.message
        except Exception:
            log.exception("SMPP %s: unexpected error storing a %s", self.name, kind)
            error = "internal error"
        channel = self._channel
        if channel is not None:
            channel.send(("stored", number, error))


# ---------------------------------------------------------------- the child process


class _Child:
    """The child's side: submits what the daemon hands over, tells it each outcome, and hands it what the SMSC
    delivers (a `TransportSink` to the transport), acknowledged once the daemon has stored it."""

    def __init__(self, transport: SmppTransport) -> None:
        self._transport = transport
        self._submits: dict[int, asyncio.Task[None]] = {}
        self._stored: dict[int, asyncio.Future[str | None]] = {}
        self._numbers = itertools.count(1)
        self.stop = asyncio.Event()
        self.channel = _Channel(self._heard)

    def _heard(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "submit":
            (_, number, sms_id, sender, recipient, text, attempts, expires_at, priority, fair_rank, smsc_validity,
             coding, segments) = item
            message = OutboundMessage(sms_id, sender, recipient, text, attempts, expires_at, Priority(priority),
                                      fair_rank, smsc_validity)
            encoded = EncodedMessage(Coding(coding), tuple(Segment(*segment) for segment in segments))
            self._submits[number] = asyncio.get_running_loop().create_task(self._submit(number, message, encoded))
        elif kind == "cancel":
            task = self._submits.get(item[1])
            if task is not None:
                task.cancel()
        elif kind == "stored":
            stored = self._stored.pop(item[1], None)
            if stored is not None and not stored.done():
                stored.set_result(item[2])
        elif kind == "stop":
            self.stop.set()

    async def _submit(self, number: int, message: OutboundMessage, encoded: EncodedMessage) -> None:
        try:
            ids = await self._transport.submit(message, encoded)
        except (TransientSubmitError, PermanentSubmitError) as exc:
            self.channel.send(("failed", number, isinstance(exc, PermanentSubmitError), exc.message, exc.code),
                              linger=True)
        except Exception:
            log.exception("message %s: unexpected error while submitting", message.sms_id)
            self.channel.send(("failed", number, False, "internal error in the SMPP process", "INTERNAL"),
                              linger=True)
        else:
            self.channel.send(("done", number, ids), linger=True)
        finally:
            self._submits.pop(number, None)

    async def on_receipt(self, receipt: Receipt) -> None:
        await self._stored_by_daemon(("receipt", receipt.transport, receipt.smsc_id, receipt.outcome.value,
                                      receipt.error_code, receipt.at))

    async def on_incoming(self, part: IncomingPart) -> None:
        await self._stored_by_daemon(("incoming", part.transport, part.sender, part.recipient, part.text,
                                      part.received_at, part.reference, part.total, part.sequence))

    async def _stored_by_daemon(self, item: tuple[Any, ...]) -> None:
        number = next(self._numbers)
        stored: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._stored[number] = stored
        self.channel.send((item[0], number, *item[1:]))
        try:
            error = await stored
        finally:
            self._stored.pop(number, None)
        if error is not None:
            raise ServiceUnavailable(error)

    async def report_health(self) -> None:
        told = None
        while True:
            health = self._transport.health()
            now = (health.ready, health.state, health.detail, health.in_flight)
            if now != told:
                self.channel.send(("health", *now), linger=True)
                told = now
            await asyncio.sleep(HEALTH_EVERY)


async def _serve(name: str, settings: SmppSettings, link: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    transport = SmppTransport(name, settings)
    child = _Child(transport)
    await loop.create_unix_connection(lambda: child.channel, sock=link)
    # When to stop is the daemon's call (a stop frame, or the end of the link): a Ctrl-C, or systemd stopping
    # the service, signals every process of the group at once, and the daemon first lets the window drain.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: None)
    running = loop.create_task(transport.run(child))
    health = loop.create_task(child.report_health())
    stopping = loop.create_task(child.stop.wait())
    ends: list[asyncio.Future[Any]] = [running, stopping, child.channel.closed]
    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    if child.channel.closed.done():
        log.error("SMPP %s process: the daemon went away; unbinding and exiting", name)
    for task in (running, health, stopping):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="asterisk_sendsms.runtime.smpp_child", description="(started by the daemon)")
    parser.add_argument("--link", type=int, required=True)
    args = parser.parse_args(argv)
    link = socket.socket(fileno=args.link)
    name, settings, log_level, log_format = read_hello(link, "SMPP process")
    configure_logging(log_level, log_format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(name, settings, link))


if __name__ == "__main__":
    main()
