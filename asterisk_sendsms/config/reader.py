"""Reading the configuration's values: a TOML file, its tables key by key (unknown keys reported), and the
small value grammars (durations, HOST:PORT, networks, host and string lists), with messages that name the key."""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from asterisk_sendsms.config.schema import DEFAULT_HTTP_PORT, HostPort
from asterisk_sendsms.core.errors import ConfigError
from asterisk_sendsms.core.urlrules import Network

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
    """`HOST:PORT`, `[IPv6]:PORT` or a bare port (on `default_host`)."""
    text = value.strip()
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:([0-9]+)|([^:\[\]]*):([0-9]+)|([0-9]+)", text)
    if not match:
        raise ConfigError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_HTTP_PORT}), got {value!r}")
    host = match.group(1) or match.group(3) or default_host
    port = int(match.group(2) or match.group(4) or match.group(5))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range 0-65535")
    return HostPort(host, port)


def networks(values: object, key: str) -> tuple[Network, ...]:
    items = str_list(values, key)
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def hosts(values: object, key: str) -> tuple[str, ...]:
    """Host names as URLs give them to the URL policy: lower case, without a trailing dot."""
    return tuple(host.lower().rstrip(".") for host in str_list(values, key))


def str_list(values: object, key: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{key}: expected a list of strings")
    return tuple(values)


class Table:
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

    def networks(self, name: str, default: tuple[Network, ...]) -> tuple[Network, ...]:
        value = self.get(name)
        return default if value is None else networks(value, self.key(name))

    def table(self, name: str) -> Table:
        return Table(self.get(name, {}), self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown setting")


def read_file(path: Path) -> dict[str, Any]:
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

