"""An AGI conversation over asyncio streams (a FastAGI socket or a process's stdin/stdout): bounded reads
with timeouts, end of stream as hangup, and the `CallControl` operations the call flow uses."""

from __future__ import annotations

import asyncio
import sys

from asterisk_sendsms.wire.agi import (
    MAX_LINE,
    AgiEnvironment,
    AgiError,
    AgiHangup,
    AgiReply,
    ReplyParser,
    format_command,
    parse_environment_line,
)

__all__ = ["AgiChannel", "stdio_streams"]

MAX_ENVIRONMENT_LINES = 200
# Asterisk's block is about 1 kB plus the arguments; this bounds what a peer can make us hold per connection.
MAX_ENVIRONMENT_BYTES = 64 * 1024
DTMF = frozenset("0123456789*#ABCDabcd")
# STREAM FILE answers when playback ends: a long prompt may take minutes.
PLAYBACK_TIMEOUT = 600.0


class AgiChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 command_timeout: float = 30.0) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = command_timeout
        self._parser = ReplyParser()
        self._signalled = False  # SIGHUP: the caller is gone, the AGI stream still works
        self._closed = False  # the stream itself is gone
        self.environment = AgiEnvironment()

    @property
    def hung_up(self) -> bool:
        return self._signalled or self._closed or self._parser.hung_up

    def mark_hung_up(self) -> None:
        """Called on SIGHUP (process AGI). Commands still go through: Asterisk keeps reading them, and
        variables set now are seen by the dialplan's `h` extension."""
        self._signalled = True

    async def _readline(self, seconds: float) -> str:
        try:
            line = await asyncio.wait_for(self._reader.readuntil(b"\n"), seconds)
        except asyncio.IncompleteReadError:
            self._closed = True
            raise AgiHangup("Asterisk closed the AGI stream") from None
        except asyncio.LimitOverrunError:
            raise AgiError(f"an AGI line longer than {MAX_LINE} bytes") from None
        except TimeoutError:
            # Its answer may still come and would be read as the next command's: the conversation is over.
            self._closed = True
            raise AgiHangup(f"Asterisk did not answer within {seconds:g}s") from None
        except (ConnectionError, OSError) as exc:
            self._closed = True
            raise AgiHangup(f"AGI stream broken: {exc}") from None
        return line.decode("utf-8", errors="replace")

    async def read_environment(self, within: float = 10.0) -> AgiEnvironment:
        """Read the block up to its blank line, within `within` seconds overall and a bounded number of lines."""
        async def read() -> None:
            size = 0
            for _ in range(MAX_ENVIRONMENT_LINES):
                line = await self._readline(within + 1.0)  # the overall deadline below ends it first
                size += len(line)
                if size > MAX_ENVIRONMENT_BYTES:
                    raise AgiError(f"the AGI environment is larger than {MAX_ENVIRONMENT_BYTES} bytes")
                if not parse_environment_line(self.environment, line):
                    return
            raise AgiError(f"the AGI environment has more than {MAX_ENVIRONMENT_LINES} lines")
        try:
            await asyncio.wait_for(read(), within)
        except TimeoutError:
            raise AgiError(f"no complete AGI environment within {within:g}s") from None
        return self.environment

    async def command(self, command: str, *arguments: str, raw: tuple[str, ...] = (),
                      reply_within: float | None = None) -> AgiReply:
        if self._closed:
            raise AgiHangup("the AGI stream is closed")
        try:
            self._writer.write(format_command(command, *arguments, raw=raw))
            # A peer that stops reading must not hold the call flow forever.
            await asyncio.wait_for(self._writer.drain(), self._timeout)
        except TimeoutError:
            self._closed = True
            raise AgiHangup(f"Asterisk did not read a command within {self._timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            self._closed = True
            raise AgiHangup(f"AGI stream broken: {exc}") from None
        while True:
            reply = self._parser.feed(await self._readline(reply_within or self._timeout))
            if reply is not None:
                return reply

    # ------------------------------------------------------------ CallControl

    async def answer(self) -> None:
        await self.command("ANSWER")

    async def play(self, sound: str) -> bool:
        reply = await self.command("STREAM FILE", sound, "", reply_within=PLAYBACK_TIMEOUT)
        return reply.result >= 0

    async def set_variable(self, name: str, value: str) -> None:
        await self.command("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command("GET VARIABLE", name)
        return reply.data if reply.result == 1 else None

    async def hangup(self) -> None:
        await self.command("HANGUP")

    # ------------------------------------------------------------ OzmlCall

    async def collect_digits(self, seconds: float, max_digits: int, terminator: str) -> str:
        digits = ""
        while len(digits) < max_digits:
            reply = await self.command("WAIT FOR DIGIT", raw=(str(int(seconds * 1000)),),
                                       reply_within=seconds + self._timeout)
            if reply.result <= 0:  # 0: silence until the timeout; -1: the channel went away
                break
            digit = chr(reply.result) if reply.result < 0x80 else ""
            if digit not in DTMF or digit == terminator:  # not a key: treated as the end of the input
                break
            digits += digit
        return digits

    async def send_dtmf(self, digits: str) -> None:
        await self.command("EXEC", "SendDTMF", digits)

    async def transfer(self, context: str | None, extension: str) -> None:
        # Where the dialplan goes on when this AGI ends.
        if context:
            await self.command("SET CONTEXT", context)
        await self.command("SET EXTENSION", extension)
        await self.command("SET PRIORITY", raw=("1",))

    async def reject(self, reason: str) -> None:
        await self.command("EXEC", "Hangup", "17" if reason == "busy" else "21")  # Q.850: busy / rejected

    async def record(self, name: str, max_seconds: float) -> str | None:
        reply = await self.command("RECORD FILE", name, "wav", "#", raw=(str(int(max_seconds * 1000)),),
                                   reply_within=max_seconds + self._timeout)
        return name if reply.result >= 0 else None


async def stdio_streams() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Process AGI: Asterisk writes to our stdin and reads our stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
