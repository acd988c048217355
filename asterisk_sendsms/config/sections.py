"""The tables of the configuration file that the environment and the command line do not touch, each read into
its settings class: [[users]], [[routes]], [policy], [optout], [speech], [asterisk] (with its prompts). A key
left out takes the class's default."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from asterisk_sendsms.config.reader import Table, parse_host_port, str_list
from asterisk_sendsms.config.schema import (
    MAX_SCHEDULE_HORIZON,
    AsteriskConfig,
    OptOutConfig,
    OptOutScope,
    Overrides,
    PolicyConfig,
    PromptConfig,
    Route,
    SpeechConfig,
    TransportConfig,
    UserConfig,
    default_of,
)
from asterisk_sendsms.config.urls import parse_ari_url
from asterisk_sendsms.core.addresses import parse_sender
from asterisk_sendsms.core.errors import ConfigError, InvalidParameter
from asterisk_sendsms.core.passwords import PasswordHashError, parse_hash
from asterisk_sendsms.core.timetable import parse_window
from asterisk_sendsms.core.traffic import Priority

ENDPOINT_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*/\S+")
_NUMBER_PREFIX = re.compile(r"\+?[0-9]*")


def speech(table: Table, cache_dir: Path) -> SpeechConfig:
    """[speech]; `cache_dir` is where the WAVs go unless the table says."""
    default = SpeechConfig(cache_dir)
    configured_dir = table.text("cache_dir")
    command = str_list(table.get("command", list(default.command)), table.key("command"))
    if not command or not any("{output}" in part for part in command):
        raise ConfigError(f"{table.key('command')}: the command must name the WAV it writes as {{output}}")
    for part in command:
        try:
            part.format_map({"text": "", "voice": "", "output": ""})
        except (KeyError, ValueError, IndexError):
            raise ConfigError(f"{table.key('command')}: {part!r} may use only {{text}}, {{voice}} and {{output}}")\
                from None
    config = SpeechConfig(cache_dir=Path(configured_dir) if configured_dir else default.cache_dir, command=command,
                          voice=table.text("voice") or default.voice,
                          timeout=table.duration("timeout", default.timeout))
    table.finish()
    return config


def asterisk(table: Table, overrides: Overrides, users: tuple[UserConfig, ...]) -> AsteriskConfig:
    default = AsteriskConfig()
    file_fastagi = table.text("fastagi")
    fastagi_text = overrides.fastagi or file_fastagi
    fastagi = parse_host_port(fastagi_text, "asterisk.fastagi") if fastagi_text else default.fastagi
    ari_urls = str_list(table.get("ari", []), table.key("ari"))
    if overrides.ari:
        ari = tuple(parse_ari_url(u, f"--ari {u}") for u in overrides.ari)
    else:
        ari = tuple(parse_ari_url(u, f"{table.key('ari')}[{i}]") for i, u in enumerate(ari_urls))
    allowed = table.networks("fastagi_allowed_clients", default.fastagi_allowed_clients)
    secret = table.text("fastagi_secret") or default.fastagi_secret
    if secret is not None and len(secret) < 16:
        raise ConfigError(f"{table.key('fastagi_secret')}: use at least 16 characters (e.g. from "
                          "`openssl rand -hex 16`)")
    user = table.text("user") or default.user
    if user and user not in {u.name for u in users}:
        raise ConfigError(f"{table.key('user')}: no user named {user!r}")
    if fastagi is not None and not user and not is_loopback(fastagi.host):
        raise ConfigError(f"{table.key('user')}: FastAGI listens on {fastagi}, beyond this machine: name the "
                          "[[users]] entry whose limits its sends get (asterisk.user)")
    prompt_config = prompts(table.table("prompts"))
    dial = table.text("dial") or default.dial
    if "{number}" not in dial:
        raise ConfigError(f"{table.key('dial')}: the dial string needs {{number}}, e.g. \"PJSIP/{{number}}@trunk\"")
    endpoints = str_list(table.get("call_endpoints", list(default.call_endpoints)), table.key("call_endpoints"))
    for pattern in endpoints:
        _check_endpoint_pattern(pattern, table.key("call_endpoints"))
    unknown = ozml_unknown(table, default.ozml_unknown_ends_call)
    table.finish()
    return AsteriskConfig(fastagi=fastagi, fastagi_allowed_clients=allowed, fastagi_secret=secret, ari=ari,
                          user=user, prompts=prompt_config, dial=dial, call_endpoints=endpoints,
                          ozml_unknown_ends_call=unknown)


def is_loopback(host: str) -> bool:
    """Whether a listening host reaches this machine only (a name other than localhost counts as not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_endpoint_pattern(pattern: str, key: str) -> None:
    if not ENDPOINT_PATTERN.fullmatch(pattern):
        raise ConfigError(f"{key}: {pattern!r} is not a TECH/resource pattern such as \"PJSIP/1??\" or "
                          "\"Local/*@ivr-out\"")


def ozml_unknown(table: Table, ends_call: bool) -> bool:
    """`ozml_unknown = "skip"` or `"hangup"`: whether an unknown OzML command ends the call (`ends_call` when
    the key is left out)."""
    value = table.text("ozml_unknown", "hangup" if ends_call else "skip")
    if value not in ("skip", "hangup"):
        raise ConfigError(f"{table.key('ozml_unknown')}: expected \"skip\" or \"hangup\"")
    return value == "hangup"


def prompts(table: Table) -> PromptConfig:
    """[prompts]: an empty text is silence, so it is kept as it is."""
    default = PromptConfig()
    config = PromptConfig(before=table.text("before", default.before) or "",
                          after=table.text("after", default.after) or "",
                          failed=table.text("failed", default.failed) or "")
    table.finish()
    return config


def user(table: Table, allow_plaintext: bool) -> UserConfig:
    name = table.text("name")
    if not name:
        raise ConfigError(f"{table.key('name')}: every user needs a name")
    default = UserConfig(name)
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
        check_sender(default_sender, table.key("default_sender"))
    config = UserConfig(
        name=name, password_hash=password_hash, plaintext_password=plaintext,
        can_send=table.flag("can_send", default.can_send),
        allowed_sources=table.networks("allowed_sources", default.allowed_sources),
        allowed_destinations=str_list(table.get("allowed_destinations", list(default.allowed_destinations)),
                                      table.key("allowed_destinations")),
        default_sender=default_sender or default.default_sender,
        admin=table.flag("admin", default.admin),
        can_call=table.flag("can_call", default.can_call),
        call_destinations=_call_destinations(table, default.call_destinations),
        priorities=_priorities(table, default.priorities),
        max_rate=_positive(table, "max_rate", 1e-3, 1e5),
        daily_quota=_positive(table, "daily_quota", 1, 10**12, whole=True),
        monthly_quota=_positive(table, "monthly_quota", 1, 10**12, whole=True),
    )
    if config.can_call and not config.call_destinations:
        raise ConfigError(f"{table.key('call_destinations')}: user {name!r} may call (can_call) but no destination "
                          "is named: list number prefixes (e.g. [\"+3620\"], or [\"\"] for any number) or "
                          "endpoint patterns (e.g. [\"PJSIP/1??\"])")
    table.finish()
    return config


def _positive(table: Table, name: str, low: float, high: float, whole: bool = False) -> Any:
    """An optional limit: absent (None: no limit), or a number from `low` to `high` (a whole one if `whole`)."""
    value = table.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int))
            or not low <= value <= high):
        raise ConfigError(f"{table.key(name)}: expected a {'whole ' if whole else ''}number from {low:g} to {high:g}"
                          " (leave it out for no limit)")
    return value


def policy(table: Table) -> PolicyConfig:
    default = PolicyConfig()
    name = table.text("timezone")
    try:
        zone: tzinfo = default.timezone if not name else UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{table.key('timezone')}: {name!r} is not a time zone (e.g. Europe/Budapest, UTC)") from None
    hours = table.text("bulk_hours")
    window = parse_window(hours, zone) if hours else default.bulk_hours
    if hours and window is None:
        raise ConfigError(f"{table.key('bulk_hours')}: expected HH:MM-HH:MM with two different times, e.g. "
                          "\"08:00-20:00\" (leave it out for any time of day)")
    config = PolicyConfig(timezone=zone, bulk_hours=window,
                          schedule_horizon=table.duration("schedule_horizon", default.schedule_horizon, 60.0,
                                                          MAX_SCHEDULE_HORIZON))
    table.finish()
    return config


def _priorities(table: Table, default: frozenset[Priority]) -> frozenset[Priority]:
    key = table.key("priorities")
    names = str_list(table.get("priorities", [p.value for p in default]), key)
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


def optout(table: Table) -> OptOutConfig:
    default = OptOutConfig()
    words: dict[str, tuple[str, ...]] = {}
    for name in ("keywords", "start_keywords"):
        key = table.key(name)
        values = str_list(table.get(name, list(getattr(default, name))), key)
        if any(not value.strip() for value in values):
            raise ConfigError(f"{key}: a keyword cannot be empty")
        words[name] = tuple(keyword_form(value) for value in values)
    both = sorted(set(words["keywords"]) & set(words["start_keywords"]))
    if both:
        raise ConfigError(f"{table.key('start_keywords')}: {both[0]!r} is also in {table.key('keywords')}")
    scope = table.text("scope", default.scope.value)
    if scope not in tuple(OptOutScope):
        raise ConfigError(f"{table.key('scope')}: expected \"sender\" or \"global\", got {scope!r}")
    config = OptOutConfig(keywords=words["keywords"], start_keywords=words["start_keywords"],
                          scope=OptOutScope(scope),
                          refuse_interactive=table.flag("refuse_interactive", default.refuse_interactive))
    table.finish()
    return config


def _call_destinations(table: Table, default: tuple[str, ...]) -> tuple[str, ...]:
    key = table.key("call_destinations")
    destinations = str_list(table.get("call_destinations", list(default)), key)
    for destination in destinations:
        if "/" in destination:
            _check_endpoint_pattern(destination, key)
        elif not _NUMBER_PREFIX.fullmatch(destination):
            raise ConfigError(f"{key}: {destination!r} is neither a number prefix (digits, optionally after '+') "
                              "nor a TECH/resource pattern")
    return destinations


def check_sender(value: str, key: str) -> None:
    try:
        parse_sender(value)
    except InvalidParameter as exc:
        raise ConfigError(f"{key}: {exc.reason}") from None


def routes(values: object, transports: tuple[TransportConfig, ...]) -> tuple[Route, ...]:
    names = {t.name for t in transports}
    if values is None:
        # Without routes every recipient may use every transport, in the order they are configured.
        return (Route("", tuple(t.name for t in transports)),) if transports else ()
    if not isinstance(values, list):
        raise ConfigError("routes: expected [[routes]] tables")
    balance_default = default_of(Route, "balance")
    configured: list[Route] = []
    for index, entry in enumerate(values):
        table = Table(entry, f"routes[{index}]")
        prefix = table.text("prefix") or ""  # "": every recipient
        if not _NUMBER_PREFIX.fullmatch(prefix):
            raise ConfigError(f"{table.key('prefix')}: a recipient prefix holds digits, optionally after '+'")
        via = str_list(table.get("transports", []), table.key("transports"))
        if not via:
            raise ConfigError(f"{table.key('transports')}: name at least one transport")
        for name in via:
            if name not in names:
                raise ConfigError(f"{table.key('transports')}: no transport named {name!r}")
        balance = table.text("balance") or balance_default
        if balance not in ("failover", "round-robin"):
            raise ConfigError(f"{table.key('balance')}: expected \"failover\" or \"round-robin\"")
        table.finish()
        configured.append(Route(prefix, via, balance))
    return tuple(configured)
