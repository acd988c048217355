"""Frozen, typed configuration: loaded once from a TOML file, the environment and command-line overrides,
validated with messages that name the key. The modules: schema (the settings classes, each default written once),
reader (TOML tables and value grammars), urls (transport and ARI URLs), sections (the file-only tables), load
(file, environment, command line -> Config), agi (the process AGI script's settings)."""

from __future__ import annotations

from asterisk_sendsms.config.agi import load_agi_config
from asterisk_sendsms.config.load import load_config
from asterisk_sendsms.config.reader import parse_host_port
from asterisk_sendsms.config.schema import (
    DEFAULT_FASTAGI_PORT,
    DEMO_PASSWORD,
    DEMO_USER,
    LOOPBACK,
    AgiScriptConfig,
    AriConfig,
    AsteriskConfig,
    CallbackConfig,
    Config,
    DispatchConfig,
    HostPort,
    HttpConfig,
    MessagesConfig,
    ModemSettings,
    OptOutConfig,
    OptOutScope,
    Overrides,
    PolicyConfig,
    PromptConfig,
    Route,
    SimulatorSettings,
    SmppSettings,
    SpeechConfig,
    StatusConfig,
    StoreConfig,
    TransportConfig,
    UserConfig,
)
from asterisk_sendsms.config.sections import is_loopback, keyword_form
from asterisk_sendsms.config.urls import parse_ari_url, parse_transport_url
from asterisk_sendsms.core.urlrules import Network

__all__ = [
    "DEFAULT_FASTAGI_PORT",
    "DEMO_PASSWORD",
    "DEMO_USER",
    "LOOPBACK",
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
    "Network",
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
    "is_loopback",
    "keyword_form",
    "load_agi_config",
    "load_config",
    "parse_ari_url",
    "parse_host_port",
    "parse_transport_url",
]
