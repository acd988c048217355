"""The command line without a daemon: check-config on the shipped sample, hash-password, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from asterisk_sendsms.config import load_agi_config
from asterisk_sendsms.passwords import verify_password

from .conftest import REPO, RUN, free_port

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


def test_install_agi_writes_launchers_for_this_python(tmp_path: Path) -> None:
    result = run("install-agi", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("sendsms.agi", "ozml.agi"):
        script = tmp_path / name
        first = script.read_text().splitlines()[0]
        assert first.startswith("#!/") and "python" in first
        assert script.stat().st_mode & 0o111
        check = subprocess.run([first[2:], "-c", "import asterisk_sendsms.agi_script"], check=False)
        assert check.returncode == 0  # that interpreter has the package
    missing = run("install-agi", "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "is not a directory" in missing.stderr


def test_json_logs(tmp_path: Path) -> None:
    import json
    import signal
    import socket
    import time

    port = free_port()
    process = subprocess.Popen([str(RUN), "serve", "--data-dir", str(tmp_path), "--http", f"127.0.0.1:{port}",
                                "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:  # listening: the start-up lines are logged
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("stopping") for r in records)
