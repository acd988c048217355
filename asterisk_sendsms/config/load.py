"""Loading the daemon's configuration: the TOML file, then the environment (ASTERISK_SENDSMS_*), then the
command line, each winning over the one before, into one frozen `Config`; without a file, the demo. Every key
left out takes its settings class's default (config/schema.py)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from asterisk_sendsms.config import sections
from asterisk_sendsms.config.reader import Table, hosts, networks, parse_host_port, read_file
from asterisk_sendsms.config.schema import (
    DEMO_PASSWORD_HASH,
    DEMO_USER,
    CallbackConfig,
    Config,
    DispatchConfig,
    HttpConfig,
    MessagesConfig,
    Overrides,
    StatusConfig,
    StoreConfig,
    TransportConfig,
    UserConfig,
    default_of,
    redact_url,
)
from asterisk_sendsms.config.urls import name_transports, parse_transport_url
from asterisk_sendsms.core.errors import ConfigError
from asterisk_sendsms.core.urlrules import UrlRejected, check_url

__all__ = ["ENV_PREFIX", "default_data_dir", "load_config"]

ENV_PREFIX = "ASTERISK_SENDSMS_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "/var/lib")) / ".local" / "share")
    return Path(base) / "asterisk-sendsms"


def load_config(overrides: Overrides | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration. Without a file (argument or ASTERISK_SENDSMS_CONFIG) the embedded demo
    defaults apply: the Ozeki example user and the SMSC simulator."""
    overrides = overrides or Overrides()
    env = os.environ if env is None else env
    config_file = overrides.config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG")
                                            else None)
    demo = config_file is None
    root = Table(read_file(config_file) if config_file else {}, "")

    file_data_dir = root.text("data_dir")
    data_dir_value = overrides.data_dir or env.get(ENV_PREFIX + "DATA_DIR") or file_data_dir
    data_dir = Path(data_dir_value).expanduser() if data_dir_value else default_data_dir(env)
    # Read here, not kept: it only decides whether [[users]] may hold a password in plain text.
    allow_plaintext = root.flag("allow_plaintext_passwords", False)
    log_level = (root.text("log_level") or default_of(Config, "log_level")).upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: expected {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")

    http = _http(root.table("http"), overrides, env)
    store = _store(root.table("store"), env, data_dir)
    messages = _messages(root.table("messages"))
    dispatch = _dispatch(root.table("dispatch"))
    policy = sections.policy(root.table("policy"))
    callbacks = _callbacks(root.table("callbacks"), env)
    transports = _transports(root, overrides, demo)
    file_routes = root.get("routes")
    routes = sections.routes(None if overrides.transports else file_routes, transports)
    users = _users(root, demo, allow_plaintext)
    incoming_url = _incoming_url(root.table("incoming"), callbacks)
    speech = sections.speech(root.table("speech"), data_dir / "tts")
    status_table = root.table("status")
    status = StatusConfig(show_text=status_table.flag("show_text", StatusConfig().show_text))
    status_table.finish()
    optout = sections.optout(root.table("optout"))
    asterisk = sections.asterisk(root.table("asterisk"), overrides, users)
    root.finish()
    return Config(data_dir=data_dir, store=store, http=http, users=users, transports=transports,
                  routes=routes, messages=messages, dispatch=dispatch, policy=policy, callbacks=callbacks,
                  speech=speech, asterisk=asterisk, status=status, optout=optout, incoming_url=incoming_url,
                  log_level=log_level, demo=demo)


def _http(table: Table, overrides: Overrides, env: Mapping[str, str]) -> HttpConfig:
    default = HttpConfig()
    file_listen = table.text("listen")
    listen_text = overrides.http or env.get(ENV_PREFIX + "HTTP") or file_listen
    http = HttpConfig(
        listen=parse_host_port(listen_text, "http.listen") if listen_text else default.listen,
        allowed_clients=table.networks("allowed_clients", default.allowed_clients),
        max_body_bytes=table.integer("max_body_bytes", default.max_body_bytes, 1024, 16 * 1024 * 1024),
        workers=table.integer("workers", default.workers, 0, 64),
        head_timeout=table.duration("head_timeout", default.head_timeout, at_least=0.1),
        body_timeout=table.duration("body_timeout", default.body_timeout, at_least=0.1),
        idle_timeout=table.duration("idle_timeout", default.idle_timeout, at_least=0.1),
        backlog=table.integer("backlog", default.backlog, 16, 65535),
    )
    table.finish()
    return http


def _store(table: Table, env: Mapping[str, str], data_dir: Path) -> StoreConfig:
    file_path = table.text("path")
    default = StoreConfig(Path(file_path) if file_path else data_dir / "messages.sqlite3")
    synchronous = table.text("synchronous", default.synchronous)
    if synchronous not in ("full", "normal"):
        raise ConfigError("store.synchronous: expected \"full\" or \"normal\"")
    file_url, file_node = table.text("url"), table.text("node")
    url = env.get(ENV_PREFIX + "STORE_URL") or file_url or default.url
    if url and urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"store.url: expected a postgresql:// URL, got {redact_url(url)!r}")
    node = env.get(ENV_PREFIX + "NODE") or file_node or default.node
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", node):
        raise ConfigError(f"store.node: {node!r}: use 1-64 letters, digits, '.', '_' or '-'")
    store = StoreConfig(path=default.path, synchronous=synchronous, url=url, node=node,
                        connections=table.integer("connections", default.connections, 1, 64))
    table.finish()
    return store


def _messages(table: Table) -> MessagesConfig:
    default = MessagesConfig()
    default_sender = table.text("default_sender")
    if default_sender:
        sections.check_sender(default_sender, "messages.default_sender")
    messages = MessagesConfig(
        max_parts=table.integer("max_parts", default.max_parts, 1, 255),
        default_sender=default_sender or default.default_sender,
        validity=table.duration("validity", default.validity),
        receipt_timeout=table.duration("receipt_timeout", default.receipt_timeout),
    )
    table.finish()
    return messages


def _dispatch(table: Table) -> DispatchConfig:
    default = DispatchConfig()
    dispatch = DispatchConfig(
        retry_initial=table.duration("retry_initial", default.retry_initial),
        retry_max=table.duration("retry_max", default.retry_max),
        max_attempts=table.integer("max_attempts", default.max_attempts, 1, 1000),
        lease=table.duration("lease", default.lease, 1.0),
        poll_interval=table.duration("poll_interval", default.poll_interval),
    )
    table.finish()
    return dispatch


def _callbacks(table: Table, env: Mapping[str, str]) -> CallbackConfig:
    default = CallbackConfig()
    file_networks = table.networks("allowed_networks", default.allowed_networks)
    networks_env = env.get(ENV_PREFIX + "ALLOWED_NETWORKS")  # as the file's list, comma-separated; wins
    callbacks = CallbackConfig(
        allowed_hosts=hosts(table.get("allowed_hosts", list(default.allowed_hosts)), table.key("allowed_hosts")),
        allowed_networks=file_networks if networks_env is None else networks(
            [n.strip() for n in networks_env.split(",") if n.strip()], ENV_PREFIX + "ALLOWED_NETWORKS"),
        timeout=table.duration("timeout", default.timeout),
        retry_initial=table.duration("retry_initial", default.retry_initial),
        retry_max=table.duration("retry_max", default.retry_max),
        give_up_after=table.duration("give_up_after", default.give_up_after),
        concurrency=table.integer("concurrency", default.concurrency, 1, 1000),
        per_host=table.integer("per_host", default.per_host, 1, 1000),
        per_user=table.integer("per_user", default.per_user, 1, 1000),
        max_failures=table.integer("max_failures", default.max_failures, 1, 1000),
    )
    table.finish()
    return callbacks


def _transports(root: Table, overrides: Overrides, demo: bool) -> tuple[TransportConfig, ...]:
    """--transport URLs, else the demo's simulator, else the file's [[transports]]."""
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
            table = Table(item, f"transports[{index}]")
            url = table.text("url")
            if not url:
                raise ConfigError(f"{table.key('url')}: every transport needs a url")
            explicit, transport = parse_transport_url(url, table.key("url"))
            entries.append((table.text("name") or explicit, transport, table.key("name")))
            table.finish()
    return name_transports(entries)


def _users(root: Table, demo: bool, allow_plaintext: bool) -> tuple[UserConfig, ...]:
    if demo:
        # The demo user may also open the status page.
        return (UserConfig(DEMO_USER, password_hash=DEMO_PASSWORD_HASH, admin=True),)
    raw_users = root.get("users", [])
    if not isinstance(raw_users, list):
        raise ConfigError("users: expected [[users]] tables")
    users = tuple(sections.user(Table(item, f"users[{i}]"), allow_plaintext) for i, item in enumerate(raw_users))
    names = [u.name.lower() for u in users]
    if len(set(names)) != len(names):
        raise ConfigError("users: two users share a name (names are case-insensitive)")
    return users


def _incoming_url(table: Table, callbacks: CallbackConfig) -> str | None:
    """[incoming] url, checked against the callback URL policy's pure rules (this host's own addresses, which
    change while the daemon runs, are refused when the notifier connects)."""
    url = table.text("url") or default_of(Config, "incoming_url")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("incoming.url: expected an http:// or https:// URL")
        try:
            check_url(url, callbacks.allowed_hosts, callbacks.allowed_networks)
        except UrlRejected as exc:
            raise ConfigError(f"incoming.url: {exc} (callbacks.allowed_hosts, callbacks.allowed_networks)") from None
    table.finish()
    return url
