"""The command line without a daemon: check-config on the shipped sample, hash-password, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from asterisk_sendsms.config import load_agi_config
from asterisk_sendsms.passwords import verify_password

from .conftest import REPO, RUN

SAMPLE = REPO / "config" / "asterisk-sendsms.toml"


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUN), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_sample_config_is_valid() -> None:
    result = run("check-config", "--config", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK")
    assert "transports: simulator (simulator)" in result.stdout


def test_sample_agi_config_is_valid() -> None:
    config = load_agi_config(REPO / "config" / "agi.toml")
    assert config.url == "http://127.0.0.1:9509" and config.username == "asterisk"
    assert config.speech.cache_dir == Path("/var/cache/asterisk-sendsms/tts")


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SAMPLE.read_text().replace("max_parts = 6", "max_parts = -1"))
    result = run("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr == ("asterisk-sendsms: configuration error: messages.max_parts: expected a whole "
                             "number from 1 to 255\n")


def test_hash_password() -> None:
    result = run("hash-password", "--stdin", stdin="s3cret\n")
    assert result.returncode == 0
    assert verify_password("s3cret", result.stdout.strip())
    empty = run("hash-password", "--stdin", stdin="\n")
    assert empty.returncode == 1 and empty.stderr == "asterisk-sendsms: an empty password cannot be hashed\n"
