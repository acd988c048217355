"""The AGI protocol without I/O: the environment block, command formatting with Asterisk's quoting, and
reply lines (200 results, 510/511/520 errors, the unsolicited HANGUP line of FastAGI)."""
# panoramisk has an AGI result parser, but it reads a 520 usage reply as a success and knows nothing of the
# HANGUP line: this one is ours.

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, unquote

from asterisk_sendsms.core.errors import SmsGatewayError

__all__ = [
    "AgiCommandError",
    "AgiEnvironment",
    "AgiError",
    "AgiHangup",
    "AgiReply",
    "ReplyParser",
    "SmsStatus",
    "format_command",
    "parse_environment_line",
]



class SmsStatus(StrEnum):
    """What a dialplan reads in SMS_STATUS after a send."""

    QUEUED = "QUEUED"  # accepted, not yet sent (or its state could not be read)
    SENT = "SENT"  # gone to the network; a delivery is not confirmed
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


MAX_LINE = 8192
# Asterisk passes at most 128 arguments to an AGI (MAX_ARGS in res_agi.c).
MAX_ARGS = 128
# A 520 usage text is a few lines; a peer that sends more is not Asterisk.
MAX_USAGE_LINES = 64
HANGUP_LINE = "HANGUP"
# ASCII digits only, and few of them: int() of thousands of digits is refused (and slow).
_RESULT = re.compile(r"200 result=(-?[0-9]{1,18})(?: \((.*)\))?(?: endpos=([0-9]{1,18}))?\s*")
_ARG_NAME = re.compile(r"agi_arg_([0-9]{1,3})")


class AgiError(SmsGatewayError):
    """The AGI conversation failed."""


class AgiHangup(AgiError):
    """The channel hung up (SIGHUP, the HANGUP line, 511, or the end of the stream)."""


class AgiCommandError(AgiError):
    """Asterisk refused a command: 510 (unknown), 520 (usage) or an unparseable reply."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class AgiReply:
    result: int
    data: str | None = None  # the text in parentheses, e.g. a variable's value
    endpos: int | None = None


@dataclass
class AgiEnvironment:
    """`agi_*` variables of the environment block; `args` are agi_arg_1..n; for FastAGI, `script` and
    `params` come from the request URL."""

    variables: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    @property
    def network(self) -> bool:
        return self.variables.get("agi_network") == "yes"

    @property
    def script(self) -> str:
        """The script name without query: `sendsms` of `agi://host/sendsms?...`, `sendsms.agi` of a process."""
        raw = self.variables.get("agi_network_script") or self.variables.get("agi_request", "")
        return unquote(raw.split("?", 1)[0].rsplit("/", 1)[-1])

    @property
    def params(self) -> dict[str, str]:
        """The FastAGI URL's query, percent-decoded; names lower-cased."""
        raw = self.variables.get("agi_network_script") or self.variables.get("agi_request", "")
        query = raw.split("?", 1)[1] if "?" in raw else ""
        return {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}

    @property
    def caller(self) -> str:
        return self.variables.get("agi_callerid", "")


def parse_environment_line(environment: AgiEnvironment, line: str) -> bool:
    """Feed one line of the environment block; returns False at the blank line that ends it."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return False
    name, sep, value = line.partition(":")
    if not sep or not name.startswith("agi_"):
        raise AgiError(f"not an AGI environment line: {line[:80]!r}")
    value = value[1:] if value.startswith(" ") else value
    environment.variables[name] = value
    if name.startswith("agi_arg_"):
        match = _ARG_NAME.fullmatch(name)
        index = int(match.group(1)) if match else 0
        if not 1 <= index <= MAX_ARGS:
            raise AgiError(f"not an AGI argument: {name[:40]!r} (agi_arg_1 to agi_arg_{MAX_ARGS})")
        while len(environment.args) < index:
            environment.args.append("")
        environment.args[index - 1] = value
    return True


def _quote(argument: str) -> str:
    # Asterisk splits a command on spaces, honours double quotes and backslash escapes, and ends it at a
    # newline: so every argument is quoted and newlines cannot get through.
    cleaned = argument.replace("\r", " ").replace("\n", " ")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(command: str, *arguments: str, raw: tuple[str, ...] = ()) -> bytes:
    """`command` is the fixed words (e.g. "SET VARIABLE"); `arguments` are quoted; `raw` follow unquoted
    (numbers and keywords Asterisk expects bare)."""
    parts = [command, *(_quote(a) for a in arguments), *raw]
    return (" ".join(parts) + "\n").encode("utf-8")


class ReplyParser:
    """Turns reply lines into replies. FastAGI's unsolicited `HANGUP` line is noted and skipped (else every
    later reply would be read as the answer to the wrong command); a multi-line 520 usage reply is gathered
    and raised as one error."""

    def __init__(self) -> None:
        self.hung_up = False
        self._usage: list[str] | None = None

    def feed(self, line: str) -> AgiReply | None:
        """One line in; a reply, or None when the reply needs more lines."""
        text = line.rstrip("\r\n")
        if self._usage is not None:
            if text.startswith("520 "):
                usage, self._usage = " ".join(u.strip() for u in self._usage if u.strip()), None
                raise AgiCommandError(f"wrong command usage (520): {usage[:200]}", 520)
            if len(self._usage) >= MAX_USAGE_LINES:
                raise AgiCommandError(f"a 520 usage reply longer than {MAX_USAGE_LINES} lines", 520)
            self._usage.append(text)
            return None
        if text == HANGUP_LINE:
            self.hung_up = True
            return None
        if text.startswith("200 "):
            match = _RESULT.fullmatch(text)
            if not match:
                raise AgiCommandError(f"unparseable AGI reply: {text[:120]!r}", 200)
            endpos = match.group(3)
            return AgiReply(int(match.group(1)), match.group(2), int(endpos) if endpos is not None else None)
        if text.startswith("511"):
            raise AgiHangup("channel is dead (511)")
        if text.startswith("510"):
            raise AgiCommandError(f"Asterisk does not know the command (510): {text[4:124]}", 510)
        if text.startswith("520-"):
            self._usage = []
            return None
        if text.startswith("520"):
            raise AgiCommandError(f"wrong command usage (520): {text[4:124]}", 520)
        raise AgiCommandError(f"unexpected AGI reply: {text[:120]!r}", 0)
