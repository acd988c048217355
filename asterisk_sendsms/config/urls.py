"""The URL grammars of the configuration: transports (`simulator`, `smpp://`, `modem://`), their names, and
ARI (`http://USER:PASS@HOST:8088?app=...`). An option left out takes the settings class's default."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from asterisk_sendsms.config.schema import (
    AriConfig,
    ModemSettings,
    SimulatorSettings,
    SmppSettings,
    TransportConfig,
    default_of,
)
from asterisk_sendsms.core.errors import ConfigError

__all__ = ["parse_ari_url", "parse_transport_url"]

SMPP_PORT = 2775  # the IANA port of SMPP, when the URL names none
ARI_PORT = 8088  # Asterisk's HTTP server (http.conf), when the URL names none


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


def _choice(params: dict[str, str], name: str, default: str, choices: Sequence[str], key: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise ConfigError(f"{key}: option {name} must be one of {', '.join(choices)}")
    return value


def _yes_no(params: dict[str, str], name: str, default: bool, key: str) -> bool:
    """An on/off option: yes or no."""
    return _choice(params, name, "yes" if default else "no", ("yes", "no"), key) == "yes"


def _optional_int(params: dict[str, str], name: str, key: str) -> int | None:
    return _int_opt(params, name, 0, 0, 255, key) if name in params else None


def parse_transport_url(url: str, key: str = "transport") -> tuple[str | None, TransportConfig]:
    """Parse `simulator`, `smpp://USER:PASS@HOST:PORT?window=10&bind=trx` or
    `modem:///dev/ttyUSB0?baud=115200&pin=1234&receipts=no`. Returns the explicit name (if any) and the transport."""
    head, _, query = url.strip().partition("?")
    if head in ("simulator", "simulator:", "simulator://"):
        return _simulator(query, key)
    parts = urlsplit(url.strip())
    if parts.scheme == "smpp":
        return _smpp(url, key)
    if parts.scheme == "modem":
        return _modem(url, key)
    raise ConfigError(f"{key}: unknown transport {url!r}; expected simulator, smpp://… or modem:///…")


def _simulator(query: str, key: str) -> tuple[str | None, TransportConfig]:
    params = _query(query, key, ("name", "receipt_delay", "submit_delay", "window", "undeliverable_prefix",
                                 "reject_prefix"))
    default = SimulatorSettings()
    simulator = SimulatorSettings(
        receipt_delay=_float_opt(params, "receipt_delay", default.receipt_delay, key),
        submit_delay=_float_opt(params, "submit_delay", default.submit_delay, key),
        window=_int_opt(params, "window", default.window, 1, 100_000, key),
        undeliverable_prefix=params.get("undeliverable_prefix") or default.undeliverable_prefix,
        reject_prefix=params.get("reject_prefix") or default.reject_prefix,
    )
    return params.get("name"), TransportConfig("simulator", "simulator", simulator)


def _smpp(url: str, key: str) -> tuple[str | None, TransportConfig]:
    parts = urlsplit(url.strip())
    params = _query(parts.query, key, ("name", "window", "bind", "system_type", "throughput", "ids", "long",
                                       "receipts", "enquire_link", "response_timeout", "source_ton", "source_npi",
                                       "dest_ton", "dest_npi", "process"))
    if not parts.hostname:
        raise ConfigError(f"{key}: an SMPP URL needs a host: smpp://USER:PASS@HOST:PORT")
    try:
        port = parts.port or SMPP_PORT
    except ValueError:
        raise ConfigError(f"{key}: SMPP port is not a number from 1 to 65535") from None
    if not parts.username:
        raise ConfigError(f"{key}: an SMPP URL needs a system_id: smpp://USER:PASS@HOST:PORT")
    bind = params.get("bind", default_of(SmppSettings, "bind"))
    if bind not in ("trx", "txrx", "tx"):
        raise ConfigError(f"{key}: option bind must be trx (transceiver), txrx (transmitter + receiver)"
                          " or tx (transmitter only)")
    enquire_link = default_of(SmppSettings, "enquire_link")
    response_timeout = default_of(SmppSettings, "response_timeout")
    smpp = SmppSettings(
        host=parts.hostname, port=port, system_id=unquote(parts.username),
        password=unquote(parts.password or ""), bind=bind,
        window=_int_opt(params, "window", default_of(SmppSettings, "window"), 1, 1000, key),
        system_type=params.get("system_type", default_of(SmppSettings, "system_type")),
        throughput=_float_opt(params, "throughput", default_of(SmppSettings, "throughput"), key),
        ids=_choice(params, "ids", default_of(SmppSettings, "ids"), ("same", "hex-dec", "dec-hex"), key),
        receipts=_yes_no(params, "receipts", default_of(SmppSettings, "receipts"), key),
        long=_choice(params, "long", default_of(SmppSettings, "long"), ("udh", "sar"), key),
        # 0 is no time at all: it means the default, as leaving the option out does
        enquire_link=_float_opt(params, "enquire_link", enquire_link, key) or enquire_link,
        response_timeout=_float_opt(params, "response_timeout", response_timeout, key) or response_timeout,
        source_ton=_optional_int(params, "source_ton", key), source_npi=_optional_int(params, "source_npi", key),
        dest_ton=_optional_int(params, "dest_ton", key), dest_npi=_optional_int(params, "dest_npi", key),
        process=_yes_no(params, "process", default_of(SmppSettings, "process"), key),
    )
    if len(smpp.system_id) > 15 or len(smpp.password) > 8:
        raise ConfigError(f"{key}: SMPP 3.4 allows a system_id of 15 and a password of 8 characters")
    return params.get("name"), TransportConfig("smpp", "smpp", smpp)


def _modem(url: str, key: str) -> tuple[str | None, TransportConfig]:
    parts = urlsplit(url.strip())
    params = _query(parts.query, key, ("name", "baud", "pin", "smsc", "timeout", "receipts"))
    if parts.netloc or not parts.path.startswith("/"):
        raise ConfigError(f"{key}: a modem URL names a device path: modem:///dev/ttyUSB0")
    pin = params.get("pin") or None
    if pin is not None and not re.fullmatch(r"[0-9]{4,8}", pin):
        raise ConfigError(f"{key}: option pin must be 4 to 8 digits")
    smsc = params.get("smsc") or None
    if smsc is not None and not re.fullmatch(r"\+?[0-9]{3,20}", smsc):
        raise ConfigError(f"{key}: option smsc must be a phone number")
    timeout = default_of(ModemSettings, "timeout")
    modem = ModemSettings(device=unquote(parts.path),
                          baud=_int_opt(params, "baud", default_of(ModemSettings, "baud"), 300, 4_000_000, key),
                          pin=pin, smsc=smsc,
                          timeout=_float_opt(params, "timeout", timeout, key) or timeout,  # 0: the default
                          receipts=_yes_no(params, "receipts", default_of(ModemSettings, "receipts"), key))
    return params.get("name"), TransportConfig("modem", "modem", modem)


def name_transports(entries: Sequence[tuple[str | None, TransportConfig, str]]) -> tuple[TransportConfig, ...]:
    """The transports named: an explicit name, else their kind; names are unique."""
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
        raise ConfigError(f"{key}: expected http://USER:PASS@HOST:{ARI_PORT}?app=sendsms, got {url!r}")
    if not parts.username or parts.password is None:
        raise ConfigError(f"{key}: the ARI URL needs the ari.conf user and password: "
                          f"http://USER:PASS@HOST:{ARI_PORT}")
    try:
        port = parts.port or ARI_PORT
    except ValueError:
        raise ConfigError(f"{key}: ARI port is not a number from 1 to 65535") from None
    params = _query(parts.query, key, ("app",))
    app = params.get("app", default_of(AriConfig, "app"))
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", app):
        raise ConfigError(f"{key}: option app must be a Stasis application name")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return AriConfig(f"{parts.scheme}://{host}:{port}", unquote(parts.username), unquote(parts.password), app)
