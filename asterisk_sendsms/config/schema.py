"""The configuration's schema: frozen dataclasses, one per table of the file, each default written once, here (the
loaders read their defaults from these classes, never repeat them)."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from asterisk_sendsms.core.timetable import DailyWindow
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.core.urlrules import Network

DEMO_USER = "HTTP_User_1"
DEMO_PASSWORD = "qwe123"  # noqa: S105 - the documented Ozeki example credential, demo mode only
# scrypt hash of DEMO_PASSWORD: the demo runs with no plaintext password in its configuration either.
DEMO_PASSWORD_HASH = "scrypt$16384$8$1$mxSUkJRQQ9zX+WtAUwL62A$RK5n5r627B4q69RmpquymFuo+XJK4eJhn8ANWtsdQmw"  # noqa: S105
DEFAULT_HTTP_PORT = 9509


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
    # Processes that answer SendSms requests beside the daemon (0: the daemon answers them itself). One where
    # this process may run on a second core: the daemon (store, dispatch, notifications) holds one core at most,
    # and parsing, logins and checks of requests then run beside it (+8-23 % end to end on two cores, for about
    # 58 MiB; two workers on two cores gave no more).
    workers: int = 1 if len(os.sched_getaffinity(0)) > 1 else 0
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
    # 32 posts in flight to one receiver 50 ms away make ~600 a second; to a receiver on the same machine 8
    # made 300/s while receipts came at 1,500/s (shapes_bench), 32 kept up
    concurrency: int = 64
    per_host: int = 32  # notifications in flight to one host at most: half the slots (a hanging host cannot take all)
    per_user: int = 32  # and for one user's messages, whatever their hosts
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


DEFAULT_FASTAGI_PORT = 4573


@dataclass(frozen=True, slots=True)
class SpeechConfig:
    cache_dir: Path
    # argv of the text-to-speech engine: {voice}, {output} (a WAV it writes) and optionally {text};
    # without {text} the text goes to its standard input.
    command: tuple[str, ...] = ("espeak-ng", "-v", "{voice}", "-w", "{output}", "--stdin")
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
    log_level: str = "INFO"
    demo: bool = False  # embedded defaults: demo user and simulator

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "control.sock"


@dataclass(frozen=True, slots=True)
class AgiScriptConfig:
    """What the process AGI script needs: where the daemon is and the credentials it sends there."""

    username: str
    password: str = field(repr=False)
    url: str = f"http://{HttpConfig().listen}"  # the daemon as it listens by default
    timeout: float = 5.0
    speech: SpeechConfig = SpeechConfig(Path("/var/cache/asterisk-sendsms/tts"))
    prompts: PromptConfig = PromptConfig()
    record_dir: str = "/var/spool/asterisk/recording"  # where OzML <Record> writes on the Asterisk host
    ozml_unknown_ends_call: bool = False
    # The URL policy of the scripts ozml.agi fetches, as [callbacks] gives the daemon's (urlpolicy.UrlPolicy).
    ozml_allowed_hosts: tuple[str, ...] = ()
    ozml_allowed_networks: tuple[Network, ...] = ()


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line values; they win over the environment, which wins over the file."""

    config_file: Path | None = None
    data_dir: Path | None = None
    http: str | None = None
    transports: tuple[str, ...] = ()
    fastagi: str | None = None
    ari: tuple[str, ...] = ()


def default_of(cls: type[Any], name: str) -> Any:
    """The default a dataclass declares for one field, for a class whose other fields have none (`Config`)."""
    for item in fields(cls):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
    raise LookupError(f"{cls.__name__}.{name} has no default")
