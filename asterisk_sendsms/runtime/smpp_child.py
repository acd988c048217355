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
from functools import partial
from typing import Any

import uvloop

from asterisk_sendsms.app.transport import TransportHealth, TransportSink
from asterisk_sendsms.config import SmppSettings
from asterisk_sendsms.core.encoding import EncodedMessage
from asterisk_sendsms.core.errors import PermanentSubmitError, ServiceUnavailable, SmsGatewayError, TransientSubmitError
from asterisk_sendsms.core.model import IncomingPart, OutboundMessage, Receipt
from asterisk_sendsms.edge.smpp.transport import UNBIND_GRACE, SmppTransport
from asterisk_sendsms.ops.logs import configure_logging
from asterisk_sendsms.runtime.children import LinkEnd, child_command, exit_description, hello_frame, read_hello
from asterisk_sendsms.runtime.supervision import keep_running
from asterisk_sendsms.wire.ipc.framing import Codec, Message, encode_hello
from asterisk_sendsms.wire.ipc.smpp import (
    FROM_CHILD,
    TO_CHILD,
    Cancel,
    Failed,
    Health,
    Incoming,
    ReceiptHeard,
    Stop,
    Stored,
    Submit,
    Submitted,
)

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


class _Channel(LinkEnd):
    """One end of the link: what is posted within a turn of the event loop leaves as one frame, and what
    nobody waits for (outcomes of submits, health, new submits behind a backlog) waits up to LINGER for
    company; each message that arrives goes to `heard`."""

    def __init__(self, heard: Callable[[Any], None], codec: Codec, name: str, greeted: bool) -> None:
        super().__init__(codec, name, greeted)
        self._heard = heard
        self._unsent: list[Message] = []
        self._flushing: asyncio.Handle | None = None
        self._lingering = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def post(self, message: Message, linger: bool = False) -> None:
        self._unsent.append(message)
        if self._flushing is not None and (linger or not self._lingering):
            return
        if self._flushing is not None:
            self._flushing.cancel()
        loop = asyncio.get_running_loop()
        self._flushing = loop.call_later(LINGER, self._flush) if linger else loop.call_soon(self._flush)
        self._lingering = linger

    def _flush(self) -> None:
        self._flushing = None
        unsent, self._unsent = self._unsent, []
        self.send(*unsent)

    def data_received(self, data: bytes) -> None:
        for message in self._received(data):
            self._heard(message)

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
        channel.post(Submit(number, message, encoded), linger=True)
        try:
            return await answer
        except asyncio.CancelledError:
            if not answer.done() and channel is self._channel:
                channel.post(Cancel(number))
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
            _, channel = await loop.create_unix_connection(
                lambda: _Channel(self._heard, FROM_CHILD, f"SMPP {self.name} process", greeted=False), sock=ours)
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
            channel.post(Stop())
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

    def _heard(self, message: Submitted | Failed | Health | ReceiptHeard | Incoming) -> None:
        if isinstance(message, Submitted):
            answer = self._submits.get(message.number)
            if answer is not None and not answer.done():
                answer.set_result(list(message.ids))
        elif isinstance(message, Failed):
            answer = self._submits.get(message.number)
            if answer is not None and not answer.done():
                failure = PermanentSubmitError if message.permanent else TransientSubmitError
                answer.set_exception(failure(message.message, message.code))
        elif isinstance(message, Health):
            self._health = TransportHealth(self.name, self.kind, message.ready, message.state, message.detail,
                                           message.in_flight)
        else:
            task = asyncio.get_running_loop().create_task(self._store(message))
            self._storing.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._storing.discard)

    async def _store(self, message: ReceiptHeard | Incoming) -> None:
        """Store a receipt or an incoming SMS and tell the child, which acknowledges it to the SMSC only then."""
        assert self._sink is not None
        error: str | None = None
        try:
            if isinstance(message, ReceiptHeard):
                await self._sink.on_receipt(message.receipt)
            else:
                await self._sink.on_incoming(message.part)
        except SmsGatewayError as exc:
            error = exc.message
        except Exception:
            log.exception("SMPP %s: unexpected error storing %s", self.name,
                          "a receipt" if isinstance(message, ReceiptHeard) else "an incoming SMS")
            error = "internal error"
        channel = self._channel
        if channel is not None:
            channel.post(Stored(message.number, error))


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
        self.channel = _Channel(self._heard, TO_CHILD, "daemon", greeted=True)

    def _heard(self, message: Submit | Cancel | Stored | Stop) -> None:
        if isinstance(message, Submit):
            self._submits[message.number] = asyncio.get_running_loop().create_task(
                self._submit(message.number, message.message, message.encoded))
        elif isinstance(message, Cancel):
            task = self._submits.get(message.number)
            if task is not None:
                task.cancel()
        elif isinstance(message, Stored):
            stored = self._stored.pop(message.number, None)
            if stored is not None and not stored.done():
                stored.set_result(message.error)
        else:
            self.stop.set()

    async def _submit(self, number: int, message: OutboundMessage, encoded: EncodedMessage) -> None:
        try:
            ids = await self._transport.submit(message, encoded)
        except (TransientSubmitError, PermanentSubmitError) as exc:
            self.channel.post(Failed(number, isinstance(exc, PermanentSubmitError), exc.message, exc.code),
                              linger=True)
        except Exception:
            log.exception("message %s: unexpected error while submitting", message.sms_id)
            self.channel.post(Failed(number, False, "internal error in the SMPP process", "INTERNAL"), linger=True)
        else:
            self.channel.post(Submitted(number, tuple(ids)), linger=True)
        finally:
            self._submits.pop(number, None)

    async def on_receipt(self, receipt: Receipt) -> None:
        await self._stored_by_daemon(partial(ReceiptHeard, receipt=receipt))

    async def on_incoming(self, part: IncomingPart) -> None:
        await self._stored_by_daemon(partial(Incoming, part=part))

    async def _stored_by_daemon(self, message: Callable[[int], Message]) -> None:
        number = next(self._numbers)
        stored: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._stored[number] = stored
        self.channel.post(message(number))
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
                self.channel.post(Health(*now), linger=True)
                told = now
            await asyncio.sleep(HEALTH_EVERY)


async def _serve(name: str, settings: SmppSettings, link: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    transport = SmppTransport(name, settings)
    child = _Child(transport)
    await loop.create_unix_connection(lambda: child.channel, sock=link)
    child.channel.send_frame(encode_hello(b""))
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
