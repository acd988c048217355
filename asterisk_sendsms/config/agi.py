"""Loading the process AGI script's settings (`agi.toml`, into `schema.AgiScriptConfig`): where the daemon is, the
credentials it sends there, and what the script itself plays, records and fetches. A key left out takes the
class's default; the script reads no environment and takes no overrides."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from asterisk_sendsms.config.reader import Table, hosts, read_file
from asterisk_sendsms.config.schema import AgiScriptConfig, default_of
from asterisk_sendsms.config.sections import ozml_unknown, prompts, speech
from asterisk_sendsms.core.errors import ConfigError

__all__ = ["load_agi_config"]


def load_agi_config(path: Path) -> AgiScriptConfig:
    root = Table(read_file(path), "")
    url = root.text("url", default_of(AgiScriptConfig, "url")) or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"url: expected the daemon's http://HOST:PORT, got {url!r}")
    username, password = root.text("username"), root.text("password")
    if not username or password is None:
        raise ConfigError("username: the AGI script needs the API user and password it sends to the daemon")
    default = AgiScriptConfig(username, password)
    config = AgiScriptConfig(url=url.rstrip("/"), username=username, password=password,
                             timeout=root.duration("timeout", default.timeout),
                             speech=speech(root.table("speech"), default.speech.cache_dir),
                             prompts=prompts(root.table("prompts")),
                             record_dir=root.text("record_dir", default.record_dir) or "",
                             ozml_unknown_ends_call=ozml_unknown(root, default.ozml_unknown_ends_call),
                             ozml_allowed_hosts=hosts(root.get("ozml_allowed_hosts", list(default.ozml_allowed_hosts)),
                                                      "ozml_allowed_hosts"),
                             ozml_allowed_networks=root.networks("ozml_allowed_networks",
                                                                 default.ozml_allowed_networks))
    root.finish()
    return config
