"""Unit tests of configuration loading: defaults, overrides, validation messages that name the key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from asterisk_sendsms.config import (
    DEMO_USER,
    AgiScriptConfig,
    AriConfig,
    AsteriskConfig,
    Config,
    HttpConfig,
    ModemSettings,
    OptOutConfig,
    OptOutScope,
    Overrides,
    Route,
    SimulatorSettings,
    SmppSettings,
    SpeechConfig,
    StoreConfig,
    TransportConfig,
    UserConfig,
    load_agi_config,
    load_config,
    parse_transport_url,
)
from asterisk_sendsms.config.schema import default_of
from asterisk_sendsms.core.errors import ConfigError
from asterisk_sendsms.core.passwords import hash_password, verify_password


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_demo_defaults(tmp_path: Path) -> None:
    config = load_config(Overrides(data_dir=tmp_path), env={})
    assert config.demo and config.users[0].name == DEMO_USER
    assert config.users[0].password_hash and verify_password("qwe123", config.users[0].password_hash)
    assert config.users[0].plaintext_password is None
    assert str(config.http.listen) == "127.0.0.1:9509"
    assert [t.kind for t in config.transports] == ["simulator"]
    assert config.store.path == tmp_path / "messages.sqlite3"


def test_http_timeouts_and_backlog(tmp_path: Path) -> None:
    config = load_config(Overrides(data_dir=tmp_path), env={})
    assert (config.http.head_timeout, config.http.body_timeout, config.http.idle_timeout) == (10, 30, 75)
    assert config.http.backlog == 1024
    path = write(tmp_path, '[http]\nhead_timeout = "2s"\nbody_timeout = 5\nidle_timeout = "1m"\nbacklog = 4096\n'
                           '[[transports]]\nurl = "simulator"\n')
    config = load_config(Overrides(config_file=path), env={})
    assert (config.http.head_timeout, config.http.body_timeout, config.http.idle_timeout) == (2, 5, 60)
    assert config.http.backlog == 4096


def test_environment_and_command_line_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "/from/file"\n[http]\nlisten = "127.0.0.1:1"\n'
                           '[[transports]]\nurl = "simulator"\n')
    env = {"ASTERISK_SENDSMS_CONFIG": str(path), "ASTERISK_SENDSMS_HTTP": "127.0.0.1:2"}
    config = load_config(Overrides(), env=env)
    assert config.data_dir == Path("/from/file") and config.http.listen.port == 2 and not config.demo
    config = load_config(Overrides(data_dir=tmp_path, http="[::1]:3"), env=env)
    assert config.data_dir == tmp_path and str(config.http.listen) == "[::1]:3"


@pytest.mark.parametrize(("text", "message"), [
    ("colour = 1\n[[transports]]\nurl='simulator'", "colour: unknown setting"),
    ("[http]\nlisten = 'nowhere'\n[[transports]]\nurl='simulator'", "http.listen: expected HOST:PORT"),
    ("[messages]\nmax_parts = 0\n[[transports]]\nurl='simulator'", "messages.max_parts: expected a whole number"),
    ("[messages]\nvalidity = 'soon'\n[[transports]]\nurl='simulator'", "messages.validity: expected a duration"),
    ("[[users]]\nname='a'\npassword='x'\n[[transports]]\nurl='simulator'", "users[0].password: plaintext passwords"),
    ("[[users]]\nname='a'\npassword_hash='md5$x'\n[[transports]]\nurl='simulator'", "users[0].password_hash:"),
    ("[[users]]\nname='a'\n[[transports]]\nurl='simulator'", "has no password"),
    ("[[transports]]\nurl='carrier-pigeon://x'", "transports[0].url: unknown transport"),
    ("", "transports: configure at least one"),
    ("[[transports]]\nurl='simulator'\n[[routes]]\nprefix='+36'\ntransports=['smsc']",
     "routes[0].transports: no transport named 'smsc'"),
    ("[[transports]]\nurl='simulator'\n[[transports]]\nurl='simulator'", "a second transport named 'simulator'"),
    ("[callbacks]\nallowed_hosts = 'x'\n[[transports]]\nurl='simulator'", "callbacks.allowed_hosts: expected a list"),
    ("[callbacks]\nallowed_networks = ['10.0.0.0/33']\n[[transports]]\nurl='simulator'",
     "callbacks.allowed_networks"),
    ("[callbacks]\nper_host = 0\n[[transports]]\nurl='simulator'", "callbacks.per_host: expected a whole number"),
    ("[incoming]\nurl = 'http://127.0.0.1/sms'\n[[transports]]\nurl='simulator'",
     "incoming.url: 127.0.0.1 is an internal address"),
    ("[[users]]\nname='a'\npassword_hash='" + hash_password("p") + "'\nallowed_sources=['10.0.0.300']\n"
     "[[transports]]\nurl='simulator'", "users[0].allowed_sources"),
    ("not toml = = =", "config file"),
    ("[http]\nhead_timeout = 0\n[[transports]]\nurl='simulator'", "http.head_timeout: expected at least 0.1 s"),
    ("[http]\nbody_timeout = 'slow'\n[[transports]]\nurl='simulator'", "http.body_timeout: expected a duration"),
    ("[http]\nbacklog = 1\n[[transports]]\nurl='simulator'", "http.backlog: expected a whole number"),
    ("[[users]]\nname='a'\npassword_hash='" + hash_password("p") + "'\npriorities=['urgent']\n"
     "[[transports]]\nurl='simulator'", "users[0].priorities: expected a list of interactive, normal and bulk"),
    ("[[users]]\nname='a'\npassword_hash='" + hash_password("p") + "'\npriorities=[]\n"
     "[[transports]]\nurl='simulator'", "users[0].priorities: a user needs at least one traffic class"),
    ("[optout]\nkeywords = 'STOP'\n[[transports]]\nurl='simulator'", "optout.keywords: expected a list of strings"),
    ("[optout]\nstart_keywords = [' ']\n[[transports]]\nurl='simulator'",
     "optout.start_keywords: a keyword cannot be empty"),
    ("[optout]\nstart_keywords = ['stop']\n[[transports]]\nurl='simulator'",
     "optout.start_keywords: 'STOP' is also in optout.keywords"),
    ("[optout]\nscope = 'shortcode'\n[[transports]]\nurl='simulator'",
     "optout.scope: expected \"sender\" or \"global\", got 'shortcode'"),
    ("[optout]\nrefuse_interactive = 'yes'\n[[transports]]\nurl='simulator'",
     "optout.refuse_interactive: expected true or false"),
    ("[optout]\nkeyword = ['STOP']\n[[transports]]\nurl='simulator'", "optout.keyword: unknown setting"),
    # A lease of 0 would have the claims of waiting messages renewed in a busy loop.
    ("[dispatch]\nlease = 0\n[[transports]]\nurl='simulator'", "dispatch.lease: expected at least 1 s"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(Overrides(config_file=write(tmp_path, text)), env={})


def test_plaintext_allowed_only_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, "allow_plaintext_passwords = true\n[[users]]\nname='a'\npassword='x'\n"
                           "[[transports]]\nurl='simulator'\n")
    assert load_config(Overrides(config_file=path), env={}).users[0].plaintext_password == "x"


def test_transport_urls() -> None:
    name, smpp = parse_transport_url("smpp://esme:s%40cret@smsc.example:2776?window=20&bind=txrx&name=op1")
    assert name == "op1" and isinstance(smpp.settings, SmppSettings)
    assert (smpp.settings.host, smpp.settings.port, smpp.settings.system_id, smpp.settings.password,
            smpp.settings.window, smpp.settings.bind) == ("smsc.example", 2776, "esme", "s@cret", 20, "txrx")
    assert "s@cret" not in repr(smpp)
    assert smpp.settings.process  # the connection in a process of its own unless told otherwise
    _, in_loop = parse_transport_url("smpp://esme:pw@smsc?process=no")
    assert isinstance(in_loop.settings, SmppSettings) and not in_loop.settings.process
    _, modem = parse_transport_url("modem:///dev/ttyUSB0?baud=115200&pin=1234")
    assert modem.settings == ModemSettings("/dev/ttyUSB0", 115200, "1234")
    assert modem.settings.receipts  # status reports unless told otherwise
    _, reportless = parse_transport_url("modem:///dev/ttyUSB0?receipts=no")
    assert isinstance(reportless.settings, ModemSettings) and not reportless.settings.receipts
    _, sim = parse_transport_url("simulator?receipt_delay=0.5&undeliverable_prefix=%2B3699")
    assert sim.settings == SimulatorSettings(receipt_delay=0.5, undeliverable_prefix="+3699")


@pytest.mark.parametrize(("url", "message"), [
    ("smpp://smsc:2775", "needs a system_id"),
    ("smpp://u:p@smsc:99999", "port"),
    ("smpp://u:p@smsc?window=0", "window must be from 1 to 1000"),
    ("smpp://u:p@smsc?bind=sideways", "option bind"),
    ("smpp://u:p@smsc?colour=red", "unknown option 'colour'"),
    ("smpp://u:toolongpassword@smsc", "password of 8"),
    ("smpp://u:p@smsc?process=maybe", "option process must be one of yes, no"),
    ("modem://dev/ttyUSB0", "names a device path"),
    ("modem:///dev/ttyUSB0?pin=12", "pin must be 4 to 8 digits"),
    ("modem:///dev/ttyUSB0?baud=fast", "baud must be a whole number"),
    ("modem:///dev/ttyUSB0?receipts=off", "option receipts must be one of yes, no"),
    ("simulator?receipt_delay=-1", "cannot be negative"),
])
def test_bad_transport_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_transport_url(url, "--transport")


def test_internal_networks_allowed_by_the_file_or_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[callbacks]\nallowed_networks = ['10.1.0.0/16']\n[incoming]\nurl = 'http://10.1.2.3/sms'\n"
                           "[[transports]]\nurl='simulator'\n")
    config = load_config(Overrides(config_file=path), env={})
    assert [str(n) for n in config.callbacks.allowed_networks] == ["10.1.0.0/16"]
    assert config.callbacks.per_host == 32 and config.callbacks.per_user == 32 and config.callbacks.max_failures == 3
    env = {"ASTERISK_SENDSMS_ALLOWED_NETWORKS": "127.0.0.1/32, 10.0.0.0/8"}
    config = load_config(Overrides(config_file=path), env=env)
    assert [str(n) for n in config.callbacks.allowed_networks] == ["127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"incoming\.url: 10\.1\.2\.3 is an internal address"):
        load_config(Overrides(config_file=path), env={"ASTERISK_SENDSMS_ALLOWED_NETWORKS": ""})


def test_optout_defaults_and_keywords_in_one_form(tmp_path: Path) -> None:
    config = load_config(Overrides(data_dir=tmp_path), env={}).optout
    assert config == OptOutConfig(("STOP", "UNSUBSCRIBE"), ("START",), OptOutScope.GLOBAL, refuse_interactive=False)
    path = write(tmp_path, "[optout]\nkeywords = [' stop  all ', 'Arrêt']\nstart_keywords = []\nscope = 'sender'\n"
                           "refuse_interactive = true\n[[transports]]\nurl = 'simulator'\n")
    config = load_config(Overrides(config_file=path), env={}).optout
    assert config == OptOutConfig(("STOP ALL", "ARRÊT"), (), OptOutScope.SENDER, refuse_interactive=True)


HASH = "scrypt$16384$8$1$mxSUkJRQQ9zX+WtAUwL62A$RK5n5r627B4q69RmpquymFuo+XJK4eJhn8ANWtsdQmw"
# Every table present and empty, each list entry with its required keys only: what is left out is the default.
EMPTY_TABLES = f"""
[http]
[store]
[messages]
[dispatch]
[policy]
[callbacks]
[incoming]
[speech]
[status]
[optout]
[asterisk]
ari = ["http://u:p@pbx"]
[asterisk.prompts]
[[users]]
name = "a"
password_hash = "{HASH}"
[[transports]]
url = "simulator"
[[transports]]
url = "smpp://u:p@smsc"
[[transports]]
url = "modem:///dev/ttyUSB0"
[[routes]]
transports = ["simulator"]
"""


@pytest.mark.parametrize("text", ["[[transports]]\nurl = 'simulator'\n", EMPTY_TABLES])
def test_a_key_left_out_takes_the_settings_class_default(tmp_path: Path, text: str) -> None:
    # The defaults are written once, in config/schema.py; the loaders read them from there.
    config = load_config(Overrides(config_file=write(tmp_path, text), data_dir=tmp_path), env={})
    full = text == EMPTY_TABLES
    simulator = TransportConfig("simulator", "simulator", SimulatorSettings())
    required = {
        "data_dir": tmp_path,
        "store": StoreConfig(tmp_path / "messages.sqlite3"),
        "http": HttpConfig(),
        "users": (UserConfig("a", password_hash=HASH),) if full else (),
        "transports": (simulator, TransportConfig("smpp", "smpp", SmppSettings("smsc", 2775, "u", "p")),
                       TransportConfig("modem", "modem", ModemSettings("/dev/ttyUSB0"))) if full else (simulator,),
        "routes": (Route("", ("simulator",)),),
        "speech": SpeechConfig(tmp_path / "tts"),
        "asterisk": AsteriskConfig(ari=(AriConfig("http://pbx:8088", "u", "p"),)) if full else AsteriskConfig(),
    }
    for item in fields(Config):
        expected = required[item.name] if item.name in required else default_of(Config, item.name)
        assert getattr(config, item.name) == expected, item.name


def test_the_agi_script_settings_left_out_take_their_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "username = 'u'\npassword = 'p'\n[speech]\n[prompts]\n")
    assert load_agi_config(path) == AgiScriptConfig("u", "p")
    assert AgiScriptConfig("u", "p").url == f"http://{HttpConfig().listen}"  # where the daemon listens unless told
