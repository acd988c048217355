"""A fake Asterisk as strict as the transcripts in tests/fixtures/asterisk: Asterisk's side of AGI (process
over pipes, FastAGI over TCP) with its argument parsing, replies, 510/520 errors, SIGHUP at hangup and the
unsolicited HANGUP line of FastAGI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path

USAGE = {
    "SET VARIABLE": "Usage: SET VARIABLE <variablename> <value>",
    "GET VARIABLE": "Usage: GET VARIABLE <variablename>",
    "STREAM FILE": "Usage: STREAM FILE <filename> <escape_digits> [<sample offset>]",
    "VERBOSE": "Usage: VERBOSE <message> <level>",
}
# (words, least args, most args); the longest match wins, as in Asterisk's command table.
COMMANDS = {
    "ANSWER": (0, 0), "HANGUP": (0, 1), "NOOP": (0, 99), "VERBOSE": (1, 2), "GET VARIABLE": (1, 1),
    "GET FULL VARIABLE": (1, 2), "SET VARIABLE": (2, 2), "STREAM FILE": (2, 3), "EXEC": (1, 99),
    "SAY DIGITS": (2, 2), "SAY ALPHA": (2, 2), "GET DATA": (1, 3), "DATABASE PUT": (3, 3),
    "CHANNEL STATUS": (0, 1), "WAIT FOR DIGIT": (1, 1), "SET CONTEXT": (1, 1), "SET EXTENSION": (1, 1),
    "SET PRIORITY": (1, 1), "RECORD FILE": (4, 8),
}
# Commands Asterisk refuses on a hung-up channel (511); the rest still work, as the transcripts show.
NEEDS_LIVE_CHANNEL = {"ANSWER", "STREAM FILE", "SAY DIGITS", "SAY ALPHA", "GET DATA", "WAIT FOR DIGIT",
                      "RECORD FILE"}
DEAD = "511 Command Not Permitted on a dead channel or intercepted by a callee"


def parse_args(line: str) -> list[str]:
    """Asterisk's AGI argument splitting: whitespace separates, double quotes group, backslash escapes."""
    args: list[str] = []
    current: list[str] = []
    quoted = escaped = started = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = started = True
        elif char == '"':
            quoted = not quoted
            started = True
        elif char in " \t" and not quoted:
            if started:
                args.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        args.append("".join(current))
    return args


@dataclass
class Playback:
    sound: str
    samples: int


@dataclass
class FakeChannel:
    """One channel's AGI session as Asterisk runs it."""

    environment: dict[str, str]
    sounds_dir: Path
    variables: dict[str, str] = field(default_factory=dict)
    network: bool = False
    hangup_after: int | None = None  # the caller hangs up after this many commands
    playback_speed: float = 100.0  # how much faster than real time playback is simulated
    log: list[tuple[str, list[str]]] = field(default_factory=list)
    played: list[Playback] = field(default_factory=list)
    hung_up: bool = False
    hangup_line_pending: bool = False
    dtmf: str = ""  # what the caller will key in, one digit per WAIT FOR DIGIT
    location: dict[str, str] = field(default_factory=dict)  # SET CONTEXT/EXTENSION/PRIORITY

    def environment_block(self) -> bytes:
        lines = [f"{name}: {value}" for name, value in self.environment.items()]
        return ("\n".join(lines) + "\n\n").encode()

    def _sound(self, name: str) -> Path | None:
        candidates = [Path(name + ".wav")] if name.startswith("/") else [self.sounds_dir / f"{name}.wav"]
        return next((c for c in candidates if c.is_file()), None)

    def _samples(self, path: Path) -> int | None:
        try:
            with wave.open(str(path)) as wav:
                if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (8000, 1, 2):
                    return None  # Asterisk's .wav format is 8 kHz mono 16-bit
                return wav.getnframes()
        except (wave.Error, EOFError):
            return None

    def hang_up(self) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        if self.network:
            self.hangup_line_pending = True

    async def handle(self, line: str) -> list[str]:
        # A hangup that happened before this command shows as a HANGUP line ahead of its reply.
        announce = self.hangup_line_pending
        self.hangup_line_pending = False
        replies = await self._handle(line.rstrip("\n"))
        if announce:
            replies = ["HANGUP", *replies]
        self.log.append((line.rstrip("\n"), replies))
        if self.hangup_after is not None and len(self.log) >= self.hangup_after:
            self.hang_up()
        return replies

    async def _handle(self, line: str) -> list[str]:
        words = parse_args(line)
        command = next((c for c in sorted(COMMANDS, key=len, reverse=True)
                        if [w.upper() for w in words[:len(c.split())]] == c.split()), None)
        if command is None:
            return ["510 Invalid or unknown command"]
        args = words[len(command.split()):]
        least, most = COMMANDS[command]
        if not least <= len(args) <= most:
            usage = USAGE.get(command, f"Usage: {command}")
            return ["520-Invalid command syntax.  Proper usage follows:", f" {usage}", "520 End of proper usage."]
        if self.hung_up and command in NEEDS_LIVE_CHANNEL:
            return [DEAD]
        return [await self._run(command, args)]

    async def _run(self, command: str, args: list[str]) -> str:
        if command == "ANSWER":
            self.variables["__state"] = "Up"
            return "200 result=0"
        if command == "VERBOSE":
            return "200 result=1"
        if command == "GET VARIABLE":
            value = self.variables.get(args[0])
            return f"200 result=1 ({value})" if value is not None else "200 result=0"
        if command == "GET FULL VARIABLE":
            expanded = re.sub(r"\$\{([^}]*)\}", lambda m: self.variables.get(m.group(1), ""), args[0])
            return f"200 result=1 ({expanded})"
        if command == "SET VARIABLE":
            self.variables[args[0]] = args[1]
            return "200 result=1"
        if command == "STREAM FILE":
            path = self._sound(args[0])
            samples = self._samples(path) if path else None
            if samples is None:
                return "200 result=-1 endpos=0"
            self.played.append(Playback(args[0], samples))
            await asyncio.sleep(samples / 8000 / self.playback_speed)  # the reply comes when playback ends
            return f"200 result=0 endpos={samples}"
        if command == "GET DATA":
            return "200 result=-1" if self._sound(args[0]) is None else "200 result=0"
        if command == "HANGUP":
            self.hang_up()
            return "200 result=1"
        if command == "WAIT FOR DIGIT":
            if not self.dtmf:
                return "200 result=0"  # the timeout passed in silence
            digit, self.dtmf = self.dtmf[0], self.dtmf[1:]
            return f"200 result={ord(digit)}"
        if command in ("SET CONTEXT", "SET EXTENSION", "SET PRIORITY"):
            self.location[command.split()[1].lower()] = args[0]
            return "200 result=0"
        if command == "RECORD FILE":
            Path(f"{args[0]}.{args[1]}").write_bytes(b"RIFF")
            return "200 result=0 endpos=8000"
        if command == "EXEC" and args[0].lower() == "hangup":
            self.hang_up()
            return "200 result=-1"
        if command == "CHANNEL STATUS":
            return "200 result=6"
        if command == "DATABASE PUT":
            return "200 result=1"
        return "200 result=0"  # NOOP, EXEC, SAY DIGITS, SAY ALPHA


def base_environment(request: str, **extra: str) -> dict[str, str]:
    environment = {
        "agi_request": request, "agi_channel": "Local/s@test-00000001;2", "agi_language": "en",
        "agi_type": "Local", "agi_uniqueid": "1795569811.3", "agi_version": "GIT-master-f0c1c1a7b7",
        "agi_callerid": "+15551230000", "agi_calleridname": "unknown", "agi_callingpres": "0",
        "agi_callingani2": "0", "agi_callington": "0", "agi_callingtns": "0", "agi_dnid": "unknown",
        "agi_rdnis": "unknown", "agi_context": "test", "agi_extension": "s", "agi_priority": "1",
        "agi_enhanced": "0.0", "agi_accountcode": "", "agi_threadid": "140280580060864",
    }
    environment.update(extra)
    return environment


async def run_process_agi(channel: FakeChannel, script: Path, args: list[str], env: dict[str, str],
                          timeout: float = 60.0) -> int:
    """Run the script as Asterisk does: environment block on stdin, commands on stdout, SIGHUP at hangup."""
    for index, arg in enumerate(args, 1):
        channel.environment[f"agi_arg_{index}"] = arg
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env=env)
    assert process.stdin and process.stdout
    process.stdin.write(channel.environment_block())
    await process.stdin.drain()

    async def converse() -> None:
        assert process.stdin and process.stdout
        signalled = False
        while line := await process.stdout.readline():
            replies = await channel.handle(line.decode())
            if channel.hung_up and not signalled:
                signalled = True
                os.kill(process.pid, signal.SIGHUP)
            try:
                process.stdin.write(("\n".join(replies) + "\n").encode())
                await process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                break

    await asyncio.wait_for(converse(), timeout)
    return await asyncio.wait_for(process.wait(), timeout)


async def run_fastagi(channel: FakeChannel, host: str, port: int, timeout: float = 60.0) -> None:
    """Connect as Asterisk's AGI(agi://...) does and answer commands until the server closes."""
    channel.network = True
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(channel.environment_block())
    await writer.drain()

    async def converse() -> None:
        while line := await reader.readline():
            replies = await channel.handle(line.decode())
            try:
                writer.write(("\n".join(replies) + "\n").encode())
                await writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                break

    try:
        await asyncio.wait_for(converse(), timeout)
    finally:
        writer.close()
