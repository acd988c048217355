"""Frozen, typed configuration: loaded once from a TOML file, the environment and command-line overrides,
validated with messages that name the key."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from asterisk_sendsms.app.urlpolicy import UrlPolicy, UrlRejected
from asterisk_sendsms.core.addresses import parse_sender
from asterisk_sendsms.core.errors import ConfigError, InvalidParameter
from asterisk_sendsms.core.passwords import PasswordHashError, parse_hash
from asterisk_sendsms.core.timetable import DailyWindow, parse_window
from asterisk_sendsms.core.traffic import Priority

__all__ = [
    "AgiScriptConfig",
    "AriConfig",
    "AsteriskConfig",
    "CallbackConfig",
    "Config",
    "DispatchConfig",
    "HostPort",
    "HttpConfig",
    "MessagesConfig",
    "ModemSettings",
    "OptOutConfig",
    "OptOutScope",
    "Overrides",
    "PolicyConfig",
    "PromptConfig",
    "Route",
    "SimulatorSettings",
    "SmppSettings",
    "SpeechConfig",
    "StatusConfig",
    "StoreConfig",
    "TransportConfig",
    "UserConfig",
    "keyword_form",
    "load_agi_config",
    "load_config",
    "parse_ari_url",
    "parse_host_port",
    "parse_transport_url",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEMO_USER = "HTTP_User_1"
DEMO_PASSWORD = "qwe123"  # noqa: S105 - the documented Ozeki example credential, demo mode only
# scrypt hash of DEMO_PASSWORD: the demo runs with no plaintext password in its configuration either.
DEMO_PASSWORD_HASH = "scrypt$16384$8$1$mxSUkJRQQ9zX+WtAUwL62A$RK5n5r627B4q69RmpquymFuo+XJK4eJhn8ANWtsdQmw"  # noqa: S105
DEFAULT_HTTP_PORT = 9509
ENV_PREFIX = "ASTERISK_SENDSMS_"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UserConfig:
    name: str
    password_hash: str | None = None
    plaintext_password: str | None = None
    can_send: bool = True
    allowed_sources: tuple[Network, ...] = ()  # empty: any client address
    allowed_destinations: tuple[str, ...] = ()  # recipient prefixes; empty: any
    default_sender: str | None = None
    admin: bool = False  # may look up every user's messages
    # The Ozeki Call command costs money: off until granted, and then only to these destinations (number
    # prefixes like allowed_destinations, or TECH/resource patterns for endpoints [asterisk] call_endpoints
    # allows).
    can_call: bool = False
    call_destinations: tuple[str, ...] = ()
    priorities: frozenset[Priority] = frozenset(Priority)  # the traffic classes this user may ask for
    # Messages per second this user's messages become due at (they wait for their turn; none are refused).
    max_rate: float | None = None
    # Parts this user may have accepted per day and per month, in [policy] timezone; more are refused.
    daily_quota: int | None = None
    monthly_quota: int | None = None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: HostPort = HostPort("127.0.0.1", DEFAULT_HTTP_PORT)
    allowed_clients: tuple[Network, ...] = ()  # empty: any
    max_body_bytes: int = 64 * 1024
    # Processes that answer SendSms requests beside the daemon (0: the daemon answers them itself).
    workers: int = 0
    # A request's head must arrive within head_timeout of its first byte and its body within body_timeout of
    # the head; a connection waiting for its next request is closed after idle_timeout. Slow clients cannot
    # hold a connection (a file descriptor, a buffer) for longer than that.
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    # Connections the kernel queues before the daemon (or a front worker) accepts them; capped by
    # net.core.somaxconn.
    backlog: int = 1024


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path  # the SQLite file, used when no url is set
    # "full" fsyncs every commit (survives power loss); "normal" survives a process crash only.
    synchronous: str = "full"
    url: str | None = None  # postgresql://...: the queue shared by several gateway nodes
    # Claims carry this name; a restarted node takes back its own at once, others' wait out their lease.
    node: str = field(default_factory=socket.gethostname)
    connections: int = 4  # PostgreSQL: connections writing in parallel (SQLite has one writer)

    @property
    def where(self) -> str:
        """Where the messages are kept, safe to print: the file, or the database URL without its password."""
        return redact_url(self.url) if self.url else str(self.path)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True, slots=True)
class MessagesConfig:
    max_parts: int = 6
    default_sender: str | None = None
    validity: float = 48 * 3600.0  # seconds a message may wait for submission
    receipt_timeout: float = 48 * 3600.0  # seconds after submission until it is marked expired


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    retry_initial: float = 5.0
    retry_max: float = 300.0
    max_attempts: int = 10
    lease: float = 120.0  # a claimed message is free again after this long without progress
    poll_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """When messages may leave: the time zone the policy's hours and quota days are in, the bulk window, how far
    ahead a SendAt may be."""

    timezone: tzinfo = UTC
    bulk_hours: DailyWindow | None = None  # bulk messages wait outside these hours; None: any time
    schedule_horizon: float = 30 * 86400.0


# A SendAt further ahead than this is refused whatever the configuration says: the times the gateway shows and
# computes (its history, the status page, the CLI) stay within what dates can hold.
MAX_SCHEDULE_HORIZON = 3660 * 86400.0


@dataclass(frozen=True, slots=True)
class CallbackConfig:
    """The URLs users supply (DeliveryReportURL, the incoming-SMS URL, OzML fetches, the Call command's Url)
    and the notifier that posts to them; `urlpolicy.UrlPolicy` applies the first two lists."""

    allowed_hosts: tuple[str, ...] = ()  # empty: any host; else only these, each trusted even if internal
    allowed_networks: tuple[Network, ...] = ()  # internal addresses that may be connected to all the same
    timeout: float = 10.0  # a whole request: connecting, sending, the answer
    retry_initial: float = 5.0
    retry_max: float = 600.0
    give_up_after: float = 24 * 3600.0
    concurrency: int = 16
    per_host: int = 8  # notifications in flight to one host at most: half the slots (a hanging host cannot take all)
    per_user: int = 8  # and for one user's messages, whatever their hosts
    max_failures: int = 3  # a notification failing by an error of ours this often is parked as failed


@dataclass(frozen=True, slots=True)
class StatusConfig:
    # Message texts carry one-time codes and payment details: the status page masks them unless this is true.
    show_text: bool = False


class OptOutScope(StrEnum):
    SENDER = "sender"  # STOP to a short code stops messages from that short code (or sender name) only
    GLOBAL = "global"  # STOP stops every message to the number, whoever sends it


@dataclass(frozen=True, slots=True)
class OptOutConfig:
    """Incoming SMS whose whole text is one of `keywords` opt their sender out, `start_keywords` back in;
    `normal` and `bulk` messages to a number that opted out are refused, `interactive` ones only if
    `refuse_interactive` (a one-time code the caller asked for on the phone is no marketing)."""

    keywords: tuple[str, ...] = ("STOP", "UNSUBSCRIBE")
    start_keywords: tuple[str, ...] = ("START",)
    scope: OptOutScope = OptOutScope.GLOBAL
    refuse_interactive: bool = False


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    receipt_delay: float = 1.0
    submit_delay: float = 0.0  # an SMSC's answer time for each submit
    window: int = 100  # submits in flight at once
    undeliverable_prefix: str | None = None  # recipients starting so get an UNDELIV receipt
    reject_prefix: str | None = None  # recipients starting so are refused at submit


@dataclass(frozen=True, slots=True)
class SmppSettings:
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    bind: str = "trx"
    window: int = 10
    system_type: str = ""
    throughput: float = 0.0  # messages per second, 0 = unlimited
    ids: str = "same"  # how submit_sm_resp ids and receipt ids relate: same, hex-dec, dec-hex
    receipts: bool = True  # registered_delivery=1 on every part
    long: str = "udh"  # long messages: udh (concatenation header) or sar (SAR TLVs)
    enquire_link: float = 30.0  # seconds of silence before an enquire_link
    response_timeout: float = 10.0
    source_ton: int | None = None  # forced TON/NPI; None: chosen from each address
    source_npi: int | None = None
    dest_ton: int | None = None
    dest_npi: int | None = None
    process: bool = True  # the connection in a process of its own (False: in the daemon's event loop)


@dataclass(frozen=True, slots=True)
class ModemSettings:
    device: str
    baud: int = 115200
    pin: str | None = field(default=None, repr=False)
    smsc: str | None = None
    timeout: float = 10.0  # seconds a command may take before the modem counts as silent
    receipts: bool = True  # status reports asked for (TP-SRR) and routed to us (AT+CNMI ds=1)


TransportSettings = SimulatorSettings | SmppSettings | ModemSettings


@dataclass(frozen=True, slots=True)
class TransportConfig:
    name: str
    kind: str
    settings: TransportSettings


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    transports: tuple[str, ...]
    # "failover": the first ready transport; "round-robin": ready transports in turn (a modem pool)
    balance: str = "failover"


DEFAULT_RECORD_DIR = "/var/spool/asterisk/recording"
DEFAULT_TTS_COMMAND = ("espeak-ng", "-v", "{voice}", "-w", "{output}", "--stdin")
DEFAULT_FASTAGI_PORT = 4573


@dataclass(frozen=True, slots=True)
class SpeechConfig:
    cache_dir: Path
    # argv of the text-to-speech engine: {voice}, {output} (a WAV it writes) and optionally {text};
    # without {text} the text goes to its standard input.
    command: tuple[str, ...] = DEFAULT_TTS_COMMAND
    voice: str = "en"
    timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class AriConfig:
    base_url: str  # http://host:8088 (the /ari prefix is added)
    username: str
    password: str = field(repr=False)
    app: str = "sendsms"

    def __str__(self) -> str:
        return f"{self.base_url} (app {self.app})"


@dataclass(frozen=True, slots=True)
class PromptConfig:
    """What callers hear; each may be `sound:PATH` for a recorded file, or empty for silence."""

    before: str = "Please wait while we send you a text message."
    after: str = "The text message has been sent."
    failed: str = "Sorry, the text message could not be sent."


LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    fastagi: HostPort | None = None
    # Peers FastAGI serves; any other is disconnected before a byte is read.
    fastagi_allowed_clients: tuple[Network, ...] = LOOPBACK
    # When set, every FastAGI request proves it with `secret=` in its URL or the channel variable
    # SENDSMS_SECRET (e.g. from [globals], which Asterisk's verbose log does not show).
    fastagi_secret: str | None = field(default=None, repr=False)
    ari: tuple[AriConfig, ...] = ()
    # The API user whose permissions FastAGI and ARI sends get. None: a built-in principal without limits,
    # allowed only while FastAGI listens on loopback.
    user: str | None = None
    prompts: PromptConfig = PromptConfig()
    # The Ozeki Call command dials a number through this.
    dial: str = "Local/{number}@from-internal"
    # TECH/resource patterns (shell-style, * and ?) the Call command may dial as they are; empty: none.
    call_endpoints: tuple[str, ...] = ()
    ozml_unknown_ends_call: bool = False  # an unknown OzML command: skipped (default) or the call ends


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path
    store: StoreConfig
    http: HttpConfig
    users: tuple[UserConfig, ...]
    transports: tuple[TransportConfig, ...]
    routes: tuple[Route, ...]
    speech: SpeechConfig
    messages: MessagesConfig = MessagesConfig()
    dispatch: DispatchConfig = DispatchConfig()
    policy: PolicyConfig = PolicyConfig()
    callbacks: CallbackConfig = CallbackConfig()
    asterisk: AsteriskConfig = AsteriskConfig()
    status: StatusConfig = StatusConfig()
    optout: OptOutConfig = OptOutConfig()
    incoming_url: str | None = None  # where IncomingSMS notifications go
    allow_plaintext_passwords: bool = False
    log_level: str = "INFO"
    demo: bool = False  # embedded defaults: demo user and simulator

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "control.sock"


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values; they win over the environment, which wins over the file."""

    config_file: Path | None = None
    data_dir: Path | None = None
    http: str | None = None
    transports: tuple[str, ...] = ()
    fastagi: str | None = None
    ari: tuple[str, ...] = ()


# ---------------------------------------------------------------- small parsers

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as 30, \"30s\", \"5m\" or \"48h\"")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ConfigError(f"{key}: expected a duration such as 30, \"30s\", \"5m\" or \"48h\", got {value!r}")
    if not math.isfinite(seconds):
        raise ConfigError(f"{key}: expected a duration such as 30, \"30s\", \"5m\" or \"48h\", got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{key}: a duration cannot be negative")
    return seconds


def parse_host_port(value: str, key: str, default_host: str = "127.0.0.1") -> HostPort:
    text = value.strip()
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:([0-9]+)|([^:\[\]]*):([0-9]+)|([0-9]+)", text)
    if not match:
        raise ConfigError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_HTTP_PORT}), got {value!r}")
    host = match.group(1) or match.group(3) or default_host
    port = int(match.group(2) or match.group(4) or match.group(5))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range 0-65535")
    return HostPort(host, port)


def _networks(values: object, key: str) -> tuple[Network, ...]:
    items = _str_list(values, key)
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _hosts(values: object, key: str) -> tuple[str, ...]:
    """Host names as URLs give them to the URL policy: lower case, without a trailing dot."""
    return tuple(host.lower().rstrip(".") for host in _str_list(values, key))


def _str_list(values: object, key: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{key}: expected a list of strings")
    return tuple(values)


class _Table:
    """A TOML table read key by key; keys left unread at the end are reported as unknown."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table")
        self._data: dict[str, Any] = data
        self._where = where
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._where}.{name}" if self._where else name

    def get(self, name: str, default: object = None) -> object:
        self._seen.add(name)
        return self._data.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._data

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.key(name)}: expected a string")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{self.key(name)}: expected a whole number from {low} to {high}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false")
        return value

    def duration(self, name: str, default: float, at_least: float = 0.0, at_most: float = math.inf) -> float:
        seconds = parse_duration(self.get(name, default), self.key(name))
        if seconds < at_least:
            raise ConfigError(f"{self.key(name)}: expected at least {at_least:g} s")
        if seconds > at_most:
            limit = f"{at_most / 86400:g}d" if at_most >= 86400 else f"{at_most:g} s"
            raise ConfigError(f"{self.key(name)}: expected at most {limit}")
        return seconds

    def table(self, name: str) -> _Table:
        return _Table(self.get(name, {}), self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown setting")


# ---------------------------------------------------------------- transports


def _query(query: str, key: str, allowed: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise ConfigError(f"{key}: unknown option {name!r} (known: {', '.join(allowed)})")
        params[name] = value
    return params


def _float_opt(params: dict[str, str], name: str, default: float, key: str) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        raise ConfigError(f"{key}: option {name} must be a number") from None
    if value < 0:
        raise ConfigError(f"{key}: option {name} cannot be negative")
    return value


def _int_opt(params: dict[str, str], name: str, default: int, low: int, high: int, key: str) -> int:
    try:
        value = int(params.get(name, default))
    except ValueError:
        raise ConfigError(f"{key}: option {name} must be a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}: option {name} must be from {low} to {high}")
    return value


def _choice(params: dict[str, str], name: str, choices: Sequence[str], key: str) -> str:
    value = params.get(name, choices[0])
    if value not in choices:
        raise ConfigError(f"{key}: option {name} must be one of {', '.join(choices)}")
    return value


def _yes_no(params: dict[str, str], name: str, key: str) -> bool:
    """An on/off option: yes (the default) or no."""
    return _choice(params, name, ("yes", "no"), key) == "yes"


def _optional_int(params: dict[str, str], name: str, key: str) -> int | None:
    return _int_opt(params, name, 0, 0, 255, key) if name in params else None


def parse_transport_url(url: str, key: str = "transport") -> tuple[str | None, TransportConfig]:
    """Parse `simulator`, `smpp://USER:PASS@HOST:PORT?window=10&bind=trx` or
    `modem:///dev/ttyUSB0?baud=115200&pin=1234&receipts=no`. Returns the explicit name (if any) and the transport."""
    head, _, query = url.strip().partition("?")
    if head in ("simulator", "simulator:", "simulator://"):
        params = _query(query, key, ("name", "receipt_delay", "submit_delay", "window", "undeliverable_prefix",
                                     "reject_prefix"))
        simulator = SimulatorSettings(
            receipt_delay=_float_opt(params, "receipt_delay", 1.0, key),
            submit_delay=_float_opt(params, "submit_delay", 0.0, key),
            window=_int_opt(params, "window", 100, 1, 100_000, key),
            undeliverable_prefix=params.get("undeliverable_prefix") or None,
            reject_prefix=params.get("reject_prefix") or None,
        )
        return params.get("name"), TransportConfig("simulator", "simulator", simulator)
    parts = urlsplit(url.strip())
    if parts.scheme == "smpp":
        params = _query(parts.query, key, ("name", "window", "bind", "system_type", "throughput", "ids", "long",
                                           "receipts",
                                           "enquire_link", "response_timeout", "source_ton", "source_npi",
                                           "dest_ton", "dest_npi", "process"))
        if not parts.hostname:
            raise ConfigError(f"{key}: an SMPP URL needs a host: smpp://USER:PASS@HOST:PORT")
        try:
            port = parts.port or 2775
        except ValueError:
            raise ConfigError(f"{key}: SMPP port is not a number from 1 to 65535") from None
        if not parts.username:
            raise ConfigError(f"{key}: an SMPP URL needs a system_id: smpp://USER:PASS@HOST:PORT")
        bind = params.get("bind", "trx")
        if bind not in ("trx", "txrx", "tx"):
            raise ConfigError(f"{key}: option bind must be trx (transceiver), txrx (transmitter + receiver)"
                              " or tx (transmitter only)")
        smpp = SmppSettings(
            host=parts.hostname, port=port, system_id=unquote(parts.username),
            password=unquote(parts.password or ""), bind=bind,
            window=_int_opt(params, "window", 10, 1, 1000, key),
            system_type=params.get("system_type", ""),
            throughput=_float_opt(params, "throughput", 0.0, key),
            ids=_choice(params, "ids", ("same", "hex-dec", "dec-hex"), key),
            receipts=_yes_no(params, "receipts", key),
            long=_choice(params, "long", ("udh", "sar"), key),
            enquire_link=_float_opt(params, "enquire_link", 30.0, key) or 30.0,
            response_timeout=_float_opt(params, "response_timeout", 10.0, key) or 10.0,
            source_ton=_optional_int(params, "source_ton", key), source_npi=_optional_int(params, "source_npi", key),
            dest_ton=_optional_int(params, "dest_ton", key), dest_npi=_optional_int(params, "dest_npi", key),
            process=_yes_no(params, "process", key),
        )
        if len(smpp.system_id) > 15 or len(smpp.password) > 8:
            raise ConfigError(f"{key}: SMPP 3.4 allows a system_id of 15 and a password of 8 characters")
        return params.get("name"), TransportConfig("smpp", "smpp", smpp)
    if parts.scheme == "modem":
        params = _query(parts.query, key, ("name", "baud", "pin", "smsc", "timeout", "receipts"))
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(f"{key}: a modem URL names a device path: modem:///dev/ttyUSB0")
        pin = params.get("pin") or None
        if pin is not None and not re.fullmatch(r"[0-9]{4,8}", pin):
            raise ConfigError(f"{key}: option pin must be 4 to 8 digits")
        smsc = params.get("smsc") or None
        if smsc is not None and not re.fullmatch(r"\+?[0-9]{3,20}", smsc):
            raise ConfigError(f"{key}: option smsc must be a phone number")
        modem = ModemSettings(device=unquote(parts.path),
                              baud=_int_opt(params, "baud", 115200, 300, 4_000_000, key), pin=pin, smsc=smsc,
                              timeout=_float_opt(params, "timeout", 10.0, key) or 10.0,
                              receipts=_yes_no(params, "receipts", key))
        return params.get("name"), TransportConfig("modem", "modem", modem)
    raise ConfigError(f"{key}: unknown transport {url!r}; expected simulator, smpp://… or modem:///…")


def _name_transports(entries: Sequence[tuple[str | None, TransportConfig, str]]) -> tuple[TransportConfig, ...]:
    named: list[TransportConfig] = []
    seen: set[str] = set()
    for explicit, transport, key in entries:
        name = explicit or transport.kind
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name):
            raise ConfigError(f"{key}: transport name {name!r} may hold letters, digits, '_', '.', '-'")
        if name in seen:
            raise ConfigError(f"{key}: a second transport named {name!r}; give each one a name")
        seen.add(name)
        named.append(TransportConfig(name, transport.kind, transport.settings))
    return tuple(named)


def parse_ari_url(url: str, key: str = "ari") -> AriConfig:
    """`http://USER:PASS@HOST:8088?app=sendsms` (https too)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: expected http://USER:PASS@HOST:8088?app=sendsms, got {url!r}")
    if not parts.username or parts.password is None:
        raise ConfigError(f"{key}: the ARI URL needs the ari.conf user and password: http://USER:PASS@HOST:8088")
    try:
        port = parts.port or 8088
    except ValueError:
        raise ConfigError(f"{key}: ARI port is not a number from 1 to 65535") from None
    params = _query(parts.query, key, ("app",))
    app = params.get("app", "sendsms")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", app):
        raise ConfigError(f"{key}: option app must be a Stasis application name")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return AriConfig(f"{parts.scheme}://{host}:{port}", unquote(parts.username), unquote(parts.password), app)


def _speech(table: _Table, data_dir: Path) -> SpeechConfig:
    cache_dir = table.text("cache_dir")
    command = table.get("command", list(DEFAULT_TTS_COMMAND))
    command_tuple = _str_list(command, table.key("command"))
    if not command_tuple or not any("{output}" in part for part in command_tuple):
        raise ConfigError(f"{table.key('command')}: the command must name the WAV it writes as {{output}}")
    for part in command_tuple:
        try:
            part.format_map({"text": "", "voice": "", "output": ""})
        except (KeyError, ValueError, IndexError):
            raise ConfigError(f"{table.key('command')}: {part!r} may use only {{text}}, {{voice}} and {{output}}")\
                from None
    speech = SpeechConfig(cache_dir=Path(cache_dir) if cache_dir else data_dir / "tts", command=command_tuple,
                          voice=table.text("voice", "en") or "en",
                          timeout=table.duration("timeout", 20.0))
    table.finish()
    return speech


def _asterisk(table: _Table, overrides: Overrides, users: tuple[UserConfig, ...]) -> AsteriskConfig:
    fastagi_text = table.text("fastagi")
    fastagi_text = overrides.fastagi or fastagi_text
    fastagi = parse_host_port(fastagi_text, "asterisk.fastagi") if fastagi_text else None
    ari_urls = _str_list(table.get("ari", []), table.key("ari"))
    if overrides.ari:
        ari = tuple(parse_ari_url(u, f"--ari {u}") for u in overrides.ari)
    else:
        ari = tuple(parse_ari_url(u, f"{table.key('ari')}[{i}]") for i, u in enumerate(ari_urls))
    defaults = AsteriskConfig()
    allowed = (_networks(table.get("fastagi_allowed_clients"), table.key("fastagi_allowed_clients"))
               if table.has("fastagi_allowed_clients") else defaults.fastagi_allowed_clients)
    secret = table.text("fastagi_secret") or None
    if secret is not None and len(secret) < 16:
        raise ConfigError(f"{table.key('fastagi_secret')}: use at least 16 characters (e.g. from "
                          "`openssl rand -hex 16`)")
    user = table.text("user")
    if user and user not in {u.name for u in users}:
        raise ConfigError(f"{table.key('user')}: no user named {user!r}")
    if fastagi is not None and not user and not is_loopback(fastagi.host):
        raise ConfigError(f"{table.key('user')}: FastAGI listens on {fastagi}, beyond this machine: name the "
                          "[[users]] entry whose limits its sends get (asterisk.user)")
    prompts = _prompts(table.table("prompts"))
    dial = table.text("dial", defaults.dial) or defaults.dial
    if "{number}" not in dial:
        raise ConfigError(f"{table.key('dial')}: the dial string needs {{number}}, e.g. \"PJSIP/{{number}}@trunk\"")
    endpoints = _str_list(table.get("call_endpoints", []), table.key("call_endpoints"))
    for pattern in endpoints:
        _check_endpoint_pattern(pattern, table.key("call_endpoints"))
    unknown = _ozml_unknown(table)
    table.finish()
    return AsteriskConfig(fastagi=fastagi, fastagi_allowed_clients=allowed, fastagi_secret=secret, ari=ari,
                          user=user or None, prompts=prompts, dial=dial, call_endpoints=endpoints,
                          ozml_unknown_ends_call=unknown)


def is_loopback(host: str) -> bool:
    """Whether a listening host reaches this machine only (a name other than localhost counts as not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ENDPOINT_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*/\S+")


def _check_endpoint_pattern(pattern: str, key: str) -> None:
    if not ENDPOINT_PATTERN.fullmatch(pattern):
        raise ConfigError(f"{key}: {pattern!r} is not a TECH/resource pattern such as \"PJSIP/1??\" or "
                          "\"Local/*@ivr-out\"")


def _ozml_unknown(table: _Table) -> bool:
    value = table.text("ozml_unknown", "skip")
    if value not in ("skip", "hangup"):
        raise ConfigError(f"{table.key('ozml_unknown')}: expected \"skip\" or \"hangup\"")
    return value == "hangup"


def _prompts(table: _Table) -> PromptConfig:
    defaults = PromptConfig()
    prompts = PromptConfig(before=table.text("before", defaults.before) or "",
                           after=table.text("after", defaults.after) or "",
                           failed=table.text("failed", defaults.failed) or "")
    table.finish()
    return prompts


@dataclass(frozen=True, slots=True)
class AgiScriptConfig:
    """What the process AGI script needs: where the daemon is and the credentials it sends there."""

    url: str
    username: str
    password: str = field(repr=False)
    timeout: float = 5.0
    speech: SpeechConfig = SpeechConfig(Path("/var/cache/asterisk-sendsms/tts"))
    prompts: PromptConfig = PromptConfig()
    record_dir: str = DEFAULT_RECORD_DIR  # where OzML <Record> writes on the Asterisk host
    ozml_unknown_ends_call: bool = False
    # The URL policy of the scripts ozml.agi fetches, as [callbacks] gives the daemon's (urlpolicy.UrlPolicy).
    ozml_allowed_hosts: tuple[str, ...] = ()
    ozml_allowed_networks: tuple[Network, ...] = ()


def load_agi_config(path: Path) -> AgiScriptConfig:
    root = _Table(_read_file(path), "")
    url = root.text("url", f"http://127.0.0.1:{DEFAULT_HTTP_PORT}") or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"url: expected the daemon's http://HOST:PORT, got {url!r}")
    username, password = root.text("username"), root.text("password")
    if not username or password is None:
        raise ConfigError("username: the AGI script needs the API user and password it sends to the daemon")
    config = AgiScriptConfig(url=url.rstrip("/"), username=username, password=password,
                             timeout=root.duration("timeout", 5.0),
                             speech=_speech(root.table("speech"), Path("/var/cache/asterisk-sendsms")),
                             prompts=_prompts(root.table("prompts")),
                             record_dir=root.text("record_dir", DEFAULT_RECORD_DIR) or "",
                             ozml_unknown_ends_call=_ozml_unknown(root),
                             ozml_allowed_hosts=_hosts(root.get("ozml_allowed_hosts", []), "ozml_allowed_hosts"),
                             ozml_allowed_networks=_networks(root.get("ozml_allowed_networks", []),
                                                             "ozml_allowed_networks"))
    root.finish()
    return config


# ---------------------------------------------------------------- users and routes


def _user(table: _Table, allow_plaintext: bool) -> UserConfig:
    name = table.text("name")
    if not name:
        raise ConfigError(f"{table.key('name')}: every user needs a name")
    password_hash = table.text("password_hash")
    plaintext = table.text("password")
    if plaintext is not None and not allow_plaintext:
        raise ConfigError(f"{table.key('password')}: plaintext passwords are refused; store a hash made by "
                          "`asterisk-sendsms hash-password` in password_hash, or set "
                          "allow_plaintext_passwords = true")
    if password_hash is None and plaintext is None:
        raise ConfigError(f"{table.key('password_hash')}: user {name!r} has no password")
    if password_hash is not None:
        try:
            parse_hash(password_hash)
        except PasswordHashError as exc:
            raise ConfigError(f"{table.key('password_hash')}: {exc}") from None
    default_sender = table.text("default_sender")
    if default_sender:
        _check_sender(default_sender, table.key("default_sender"))
    user = UserConfig(
        name=name, password_hash=password_hash, plaintext_password=plaintext,
        can_send=table.flag("can_send", True),
        allowed_sources=_networks(table.get("allowed_sources", []), table.key("allowed_sources")),
        allowed_destinations=_str_list(table.get("allowed_destinations", []), table.key("allowed_destinations")),
        default_sender=default_sender or None,
        admin=table.flag("admin", False),
        can_call=table.flag("can_call", UserConfig("").can_call),
        call_destinations=_call_destinations(table),
        priorities=_priorities(table),
        max_rate=_positive(table, "max_rate", 1e-3, 1e5),
        daily_quota=_positive(table, "daily_quota", 1, 10**12, whole=True),
        monthly_quota=_positive(table, "monthly_quota", 1, 10**12, whole=True),
    )
    if user.can_call and not user.call_destinations:
        raise ConfigError(f"{table.key('call_destinations')}: user {name!r} may call (can_call) but no destination "
                          "is named: list number prefixes (e.g. [\"+3620\"], or [\"\"] for any number) or "
                          "endpoint patterns (e.g. [\"PJSIP/1??\"])")
    table.finish()
    return user


def _positive(table: _Table, name: str, low: float, high: float, whole: bool = False) -> Any:
    """An optional limit: absent (None), or a number from `low` to `high` (a whole one if `whole`)."""
    value = table.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int))
            or not low <= value <= high):
        raise ConfigError(f"{table.key(name)}: expected a {'whole ' if whole else ''}number from {low:g} to {high:g}"
                          " (leave it out for no limit)")
    return value


def _policy(table: _Table) -> PolicyConfig:
    name = table.text("timezone", "UTC") or "UTC"
    try:
        zone: tzinfo = UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{table.key('timezone')}: {name!r} is not a time zone (e.g. Europe/Budapest, UTC)") from None
    hours = table.text("bulk_hours")
    window = parse_window(hours, zone) if hours else None
    if hours and window is None:
        raise ConfigError(f"{table.key('bulk_hours')}: expected HH:MM-HH:MM with two different times, e.g. "
                          "\"08:00-20:00\" (leave it out for any time of day)")
    policy = PolicyConfig(timezone=zone, bulk_hours=window,
                          schedule_horizon=table.duration("schedule_horizon", PolicyConfig().schedule_horizon, 60.0,
                                                          MAX_SCHEDULE_HORIZON))
    table.finish()
    return policy


def _priorities(table: _Table) -> frozenset[Priority]:
    key = table.key("priorities")
    names = _str_list(table.get("priorities", [p.value for p in Priority]), key)
    try:
        priorities = frozenset(Priority.named(name) for name in names)
    except ValueError:
        raise ConfigError(f"{key}: expected a list of interactive, normal and bulk") from None
    if not priorities:
        raise ConfigError(f"{key}: a user needs at least one traffic class (interactive, normal, bulk)")
    return priorities


def keyword_form(text: str) -> str:
    """A text as keywords are compared: trimmed, inner spaces as one, in capitals ("stop " is "STOP")."""
    return " ".join(text.split()).upper()


def _optout(table: _Table) -> OptOutConfig:
    default = OptOutConfig()
    words: dict[str, tuple[str, ...]] = {}
    for name in ("keywords", "start_keywords"):
        key = table.key(name)
        values = _str_list(table.get(name, list(getattr(default, name))), key)
        if any(not value.strip() for value in values):
            raise ConfigError(f"{key}: a keyword cannot be empty")
        words[name] = tuple(keyword_form(value) for value in values)
    both = sorted(set(words["keywords"]) & set(words["start_keywords"]))
    if both:
        raise ConfigError(f"{table.key('start_keywords')}: {both[0]!r} is also in {table.key('keywords')}")
    scope = table.text("scope", default.scope.value)
    if scope not in tuple(OptOutScope):
        raise ConfigError(f"{table.key('scope')}: expected \"sender\" or \"global\", got {scope!r}")
    optout = OptOutConfig(keywords=words["keywords"], start_keywords=words["start_keywords"],
                          scope=OptOutScope(scope),
                          refuse_interactive=table.flag("refuse_interactive", default.refuse_interactive))
    table.finish()
    return optout


def _call_destinations(table: _Table) -> tuple[str, ...]:
    key = table.key("call_destinations")
    destinations = _str_list(table.get("call_destinations", []), key)
    for destination in destinations:
        if "/" in destination:
            _check_endpoint_pattern(destination, key)
        elif not re.fullmatch(r"\+?[0-9]*", destination):
            raise ConfigError(f"{key}: {destination!r} is neither a number prefix (digits, optionally after '+') "
                              "nor a TECH/resource pattern")
    return destinations


def _check_sender(value: str, key: str) -> None:
    try:
        parse_sender(value)
    except InvalidParameter as exc:
        raise ConfigError(f"{key}: {exc.reason}") from None


def _routes(values: object, transports: tuple[TransportConfig, ...]) -> tuple[Route, ...]:
    names = {t.name for t in transports}
    if values is None:
        # Without routes every recipient may use every transport, in the order they are configured.
        return (Route("", tuple(t.name for t in transports)),) if transports else ()
    if not isinstance(values, list):
        raise ConfigError("routes: expected [[routes]] tables")
    routes: list[Route] = []
    for index, entry in enumerate(values):
        table = _Table(entry, f"routes[{index}]")
        prefix = table.text("prefix", "") or ""
        if not re.fullmatch(r"\+?[0-9]*", prefix):
            raise ConfigError(f"{table.key('prefix')}: a recipient prefix holds digits, optionally after '+'")
        via = _str_list(table.get("transports", []), table.key("transports"))
        if not via:
            raise ConfigError(f"{table.key('transports')}: name at least one transport")
        for name in via:
            if name not in names:
                raise ConfigError(f"{table.key('transports')}: no transport named {name!r}")
        balance = table.text("balance", "failover") or "failover"
        if balance not in ("failover", "round-robin"):
            raise ConfigError(f"{table.key('balance')}: expected \"failover\" or \"round-robin\"")
        table.finish()
        routes.append(Route(prefix, via, balance))
    return tuple(routes)


# ---------------------------------------------------------------- loading


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "/var/lib")) / ".local" / "share")
    return Path(base) / "asterisk-sendsms"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        # Editors on Windows start UTF-8 files with a byte order mark, which TOML does not allow.
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}): "
                          "save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_config(overrides: Overrides = Overrides(), env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration. Without a file (argument or ASTERISK_SENDSMS_CONFIG) the embedded demo
    defaults apply: the Ozeki example user and the SMSC simulator."""
    env = os.environ if env is None else env
    config_file = overrides.config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG")
                                            else None)
    demo = config_file is None
    root = _Table(_read_file(config_file) if config_file else {}, "")

    file_data_dir = root.text("data_dir")
    data_dir_value = overrides.data_dir or env.get(ENV_PREFIX + "DATA_DIR") or file_data_dir
    data_dir = Path(data_dir_value).expanduser() if data_dir_value else default_data_dir(env)
    allow_plaintext = root.flag("allow_plaintext_passwords", False)
    log_level = (root.text("log_level", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level: expected DEBUG, INFO, WARNING or ERROR")

    http_table = root.table("http")
    file_listen = http_table.text("listen")
    listen_text = overrides.http or env.get(ENV_PREFIX + "HTTP") or file_listen
    http = HttpConfig(
        listen=parse_host_port(listen_text, "http.listen") if listen_text else HttpConfig().listen,
        allowed_clients=_networks(http_table.get("allowed_clients", []), http_table.key("allowed_clients")),
        max_body_bytes=http_table.integer("max_body_bytes", HttpConfig().max_body_bytes, 1024, 16 * 1024 * 1024),
        workers=http_table.integer("workers", HttpConfig().workers, 0, 64),
        head_timeout=http_table.duration("head_timeout", HttpConfig().head_timeout, at_least=0.1),
        body_timeout=http_table.duration("body_timeout", HttpConfig().body_timeout, at_least=0.1),
        idle_timeout=http_table.duration("idle_timeout", HttpConfig().idle_timeout, at_least=0.1),
        backlog=http_table.integer("backlog", HttpConfig().backlog, 16, 65535),
    )
    http_table.finish()

    store_table = root.table("store")
    store_path = store_table.text("path")
    synchronous = store_table.text("synchronous", "full")
    if synchronous not in ("full", "normal"):
        raise ConfigError("store.synchronous: expected \"full\" or \"normal\"")
    file_url, file_node = store_table.text("url"), store_table.text("node")
    store_url = env.get(ENV_PREFIX + "STORE_URL") or file_url
    if store_url and urlsplit(store_url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"store.url: expected a postgresql:// URL, got {redact_url(store_url)!r}")
    node = env.get(ENV_PREFIX + "NODE") or file_node or socket.gethostname()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", node):
        raise ConfigError(f"store.node: {node!r}: use 1-64 letters, digits, '.', '_' or '-'")
    store = StoreConfig(path=Path(store_path) if store_path else data_dir / "messages.sqlite3",
                        synchronous=synchronous, url=store_url, node=node,
                        connections=store_table.integer("connections", 4, 1, 64))
    store_table.finish()

    messages_table = root.table("messages")
    default_sender = messages_table.text("default_sender")
    if default_sender:
        _check_sender(default_sender, "messages.default_sender")
    messages = MessagesConfig(
        max_parts=messages_table.integer("max_parts", 6, 1, 255),
        default_sender=default_sender or None,
        validity=messages_table.duration("validity", MessagesConfig().validity),
        receipt_timeout=messages_table.duration("receipt_timeout", MessagesConfig().receipt_timeout),
    )
    messages_table.finish()

    dispatch_table = root.table("dispatch")
    dispatch = DispatchConfig(
        retry_initial=dispatch_table.duration("retry_initial", DispatchConfig().retry_initial),
        retry_max=dispatch_table.duration("retry_max", DispatchConfig().retry_max),
        max_attempts=dispatch_table.integer("max_attempts", DispatchConfig().max_attempts, 1, 1000),
        lease=dispatch_table.duration("lease", DispatchConfig().lease, 1.0),
        poll_interval=dispatch_table.duration("poll_interval", DispatchConfig().poll_interval),
    )
    dispatch_table.finish()

    policy = _policy(root.table("policy"))

    callbacks_table = root.table("callbacks")
    file_networks = _networks(callbacks_table.get("allowed_networks", []), "callbacks.allowed_networks")
    networks_env = env.get(ENV_PREFIX + "ALLOWED_NETWORKS")  # as the file's list, comma-separated; wins
    callbacks = CallbackConfig(
        allowed_hosts=_hosts(callbacks_table.get("allowed_hosts", []), "callbacks.allowed_hosts"),
        allowed_networks=file_networks if networks_env is None else _networks(
            [n.strip() for n in networks_env.split(",") if n.strip()], ENV_PREFIX + "ALLOWED_NETWORKS"),
        timeout=callbacks_table.duration("timeout", CallbackConfig().timeout),
        retry_initial=callbacks_table.duration("retry_initial", CallbackConfig().retry_initial),
        retry_max=callbacks_table.duration("retry_max", CallbackConfig().retry_max),
        give_up_after=callbacks_table.duration("give_up_after", CallbackConfig().give_up_after),
        concurrency=callbacks_table.integer("concurrency", CallbackConfig().concurrency, 1, 1000),
        per_host=callbacks_table.integer("per_host", CallbackConfig().per_host, 1, 1000),
        per_user=callbacks_table.integer("per_user", CallbackConfig().per_user, 1, 1000),
        max_failures=callbacks_table.integer("max_failures", CallbackConfig().max_failures, 1, 1000),
    )
    callbacks_table.finish()

    if overrides.transports:
        entries = [(*parse_transport_url(url, f"--transport {url}"), f"--transport {url}")
                   for url in overrides.transports]
    elif demo:
        entries = [(*parse_transport_url("simulator"), "transport")]
    else:
        raw = root.get("transports", [])
        if not isinstance(raw, list) or not raw:
            raise ConfigError("transports: configure at least one [[transports]] with a url")
        entries = []
        for index, item in enumerate(raw):
            table = _Table(item, f"transports[{index}]")
            url = table.text("url")
            if not url:
                raise ConfigError(f"{table.key('url')}: every transport needs a url")
            explicit, transport = parse_transport_url(url, table.key("url"))
            entries.append((table.text("name") or explicit, transport, table.key("name")))
            table.finish()
    transports = _name_transports(entries)
    configured_routes = root.get("routes")
    routes = _routes(None if overrides.transports else configured_routes, transports)

    if demo:
        # The demo user may also open the status page.
        users: tuple[UserConfig, ...] = (UserConfig(DEMO_USER, password_hash=DEMO_PASSWORD_HASH, admin=True),)
    else:
        raw_users = root.get("users", [])
        if not isinstance(raw_users, list):
            raise ConfigError("users: expected [[users]] tables")
        users = tuple(_user(_Table(item, f"users[{i}]"), allow_plaintext) for i, item in enumerate(raw_users))
        names = [u.name.lower() for u in users]
        if len(set(names)) != len(names):
            raise ConfigError("users: two users share a name (names are case-insensitive)")
    incoming_table = root.table("incoming")
    incoming_url = incoming_table.text("url") or None
    if incoming_url:
        parts = urlsplit(incoming_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("incoming.url: expected an http:// or https:// URL")
        try:
            UrlPolicy(callbacks.allowed_hosts, callbacks.allowed_networks).check_url(incoming_url)
        except UrlRejected as exc:
            raise ConfigError(f"incoming.url: {exc} (callbacks.allowed_hosts, callbacks.allowed_networks)") from None
    incoming_table.finish()
    speech = _speech(root.table("speech"), data_dir)
    status_table = root.table("status")
    status = StatusConfig(show_text=status_table.flag("show_text", StatusConfig().show_text))
    status_table.finish()
    optout = _optout(root.table("optout"))
    asterisk = _asterisk(root.table("asterisk"), overrides, users)
    root.finish()
    return Config(data_dir=data_dir, store=store, http=http, users=users, transports=transports,
                  routes=routes, messages=messages, dispatch=dispatch, policy=policy, callbacks=callbacks,
                  speech=speech, asterisk=asterisk, status=status, optout=optout, incoming_url=incoming_url,
                  allow_plaintext_passwords=allow_plaintext, log_level=log_level, demo=demo)
