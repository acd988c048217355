"""The AGI core against the recorded transcripts, and the fake Asterisk checked against them too."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from asterisk_sendsms.wire.agi import (
    AgiCommandError,
    AgiEnvironment,
    AgiError,
    AgiHangup,
    AgiReply,
    ReplyParser,
    format_command,
    parse_environment_line,
)

from .peers.fake_asterisk import FakeChannel, parse_args

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "asterisk"


def transcript(name: str) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(environment lines, [(command, first reply line)], all reply lines in order)."""
    environment: list[str] = []
    exchanges: list[tuple[str, str]] = []
    replies: list[str] = []
    in_environment = True
    for raw in (FIXTURES / name).read_text().splitlines():
        direction, text = raw[:2], raw[3:]
        if direction == "<<" and in_environment:
            if text == "":
                in_environment = False
            else:
                environment.append(text)
        elif direction == ">>":
            exchanges.append((text, ""))
        elif direction == "<<":
            exchanges[-1] = (exchanges[-1][0], text)
            replies.append(text)
    return environment, exchanges, replies


def test_process_environment() -> None:
    lines, _, _ = transcript("agi-process.txt")
    environment = AgiEnvironment()
    for line in lines:
        assert parse_environment_line(environment, line + "\n")
    assert not parse_environment_line(environment, "\n")
    assert environment.args == ["+15557654321", "Hello from Asterisk"]
    assert environment.script == "capture.agi" and not environment.network
    assert environment.variables["agi_accountcode"] == "" and environment.caller == "+15551230000"


def test_fastagi_environment_keeps_the_query() -> None:
    lines, _, _ = transcript("fastagi.txt")
    environment = AgiEnvironment()
    for line in lines:
        parse_environment_line(environment, line)
    assert environment.network and environment.script == "sendsms"
    assert environment.params == {"recipient": "+15557654321", "message": "Hi"}


@pytest.mark.parametrize("name", ["agi-process.txt", "fastagi.txt", "agi-stream-file.txt"])
def test_every_recorded_reply_parses(name: str) -> None:
    parser = ReplyParser()
    _, exchanges, _ = transcript(name)
    for command, reply in exchanges:
        if reply.startswith("510"):
            with pytest.raises(AgiCommandError) as info:
                parser.feed(reply)
            assert info.value.code == 510
        elif reply == "HANGUP":
            assert parser.feed(reply) is None and parser.hung_up
        else:
            assert isinstance(parser.feed(reply), AgiReply), (command, reply)


def test_reply_values() -> None:
    parser = ReplyParser()
    assert parser.feed("200 result=1 (+15551230000)\n") == AgiReply(1, "+15551230000")
    assert parser.feed("200 result=-1 endpos=0\n") == AgiReply(-1, None, 0)
    assert parser.feed("200 result=0 endpos=37910\n") == AgiReply(0, None, 37910)
    assert parser.feed("200 result=1 ()\n") == AgiReply(1, "")
    with pytest.raises(AgiHangup):
        parser.feed("511 Command Not Permitted on a dead channel or intercepted by a callee\n")


def test_520_usage_is_one_error_after_its_last_line() -> None:
    parser = ReplyParser()
    assert parser.feed("520-Invalid command syntax.  Proper usage follows:\n") is None
    assert parser.feed(" Usage: SET VARIABLE <variablename> <value>\n") is None
    with pytest.raises(AgiCommandError, match="SET VARIABLE <variablename>") as info:
        parser.feed("520 End of proper usage.\n")
    assert info.value.code == 520
    assert parser.feed("200 result=1\n") == AgiReply(1)  # the next reply is read as such, not swallowed


def test_commands_survive_asterisk_argument_parsing() -> None:
    hostile = 'He said "hi" \\ and\nthen left'
    line = format_command("SET VARIABLE", "SMS_ERROR", hostile).decode()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert parse_args(line.rstrip("\n")) == ["SET", "VARIABLE", "SMS_ERROR", hostile.replace("\n", " ")]
    assert format_command("VERBOSE", "x", raw=("1",)) == b'VERBOSE "x" 1\n'


def write_wav(path: Path, samples: int, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\0\0" * samples)


@pytest.mark.parametrize("name", ["agi-process.txt", "fastagi.txt", "agi-stream-file.txt"])
async def test_fake_asterisk_answers_as_the_recording(name: str, tmp_path: Path) -> None:
    """Replaying the script's side of each transcript into the fake gives Asterisk's recorded replies, line for
    line (after FastAGI's HANGUP line every later reply is one behind: the recording shows that shift)."""
    write_wav(tmp_path / "sounds" / "tts8k.wav", 37910)
    write_wav(tmp_path / "tts" / "demo.wav", 37910)
    lines, exchanges, recorded = transcript(name)
    environment = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in lines)
    channel = FakeChannel(environment, tmp_path / "sounds", variables={"CALLERID(num)": environment["agi_callerid"]
                                                                         if environment["agi_callerid"] != "unknown"
                                                                         else ""},
                          network=environment.get("agi_network") == "yes", playback_speed=1000)
    produced: list[str] = []
    for command, _ in exchanges:
        produced += await channel.handle(command.replace("/var/cache/asterisk-sendsms/tts", str(tmp_path / "tts")))
    assert produced[:len(recorded)] == recorded


@pytest.mark.parametrize("line", ["agi_arg_999999999: x", "agi_arg_0: x", "agi_arg_129: x", "agi_arg_٣: x",
                                  "agi_arg_" + "9" * 5000 + ": x", "agi_arg_-1: x", "agi_arg_: x"])
def test_absurd_argument_numbers_are_refused(line: str) -> None:
    with pytest.raises(AgiError, match="not an AGI argument"):
        parse_environment_line(AgiEnvironment(), line)


def test_argument_numbers_up_to_asterisks_limit() -> None:
    environment = AgiEnvironment()
    parse_environment_line(environment, "agi_arg_128: last")
    parse_environment_line(environment, "agi_arg_1: first")
    assert len(environment.args) == 128 and environment.args[0] == "first" and environment.args[-1] == "last"


@pytest.mark.parametrize("reply", ["200 result=" + "9" * 5000, "200 result=١٢", "200 result=1 endpos=" + "9" * 40])
def test_unparseable_numbers_are_one_error(reply: str) -> None:
    with pytest.raises(AgiCommandError, match="unparseable AGI reply"):
        ReplyParser().feed(reply)


def test_an_endless_usage_reply_is_cut() -> None:
    parser = ReplyParser()
    assert parser.feed("520-Invalid command syntax.  Proper usage follows:") is None
    with pytest.raises(AgiCommandError, match="longer than 64 lines"):
        for _ in range(1000):
            parser.feed(" more")


def test_peer_text_in_errors_is_bounded() -> None:
    for reply in ("510 " + "x" * 100_000, "200 result=" + "x" * 100_000, "\x1b" * 100_000):
        with pytest.raises(AgiCommandError) as info:
            ReplyParser().feed(reply)
        assert len(info.value.message) < 1000
