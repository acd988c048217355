"""The command line without a daemon: check-config on the shipped sample, hash-password, one-line errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from asterisk_sendsms.config import load_agi_config
from asterisk_sendsms.core.passwords import verify_password

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
    records = [json.loads(line) for line in stderr.splitlines()]  # every line, the banner too
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith(f"asterisk-sendsms listening on http://127.0.0.1:{port}/api") for r in records)
    assert any(r["message"].startswith("stopping") for r in records)


# Every mistake a user can make: one line on standard error, naming what to do, never a traceback.

def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_data_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_line(run("serve", "--data-dir", str(blocker / "data"), "--http", f"127.0.0.1:{free_port()}"), 1)
    assert line == f"asterisk-sendsms: cannot create the directory {blocker / 'data'}: Not a directory\n"


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[[transports]]\nurl = 'simulator'\n# caf\xe9\n")
    line = _one_line(run("check-config", "--config", str(bad)), 2)
    assert line == (f"asterisk-sendsms: configuration error: config file {bad} is not UTF-8 (byte 0xe9 on line 3): "
                    "save it as UTF-8\n")


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + SAMPLE.read_bytes())
    result = run("check-config", "--config", str(bom))
    assert result.returncode == 0, result.stderr


def test_hash_password_without_a_terminal() -> None:
    line = _one_line(run("hash-password"), 1)
    assert line == "asterisk-sendsms: no terminal to ask for the password on: pipe it in with --stdin\n"


def test_an_unknown_flag_is_told_with_the_commands_usage() -> None:
    result = run("serve", "--bogus")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: asterisk-sendsms serve ")
    assert result.stderr.endswith("asterisk-sendsms serve: error: unrecognized arguments: --bogus\n")


def test_client_commands_without_a_daemon_name_the_socket(tmp_path: Path) -> None:
    for command in (["status", "0190b4e2-0000-7000-8000-000000000000"], ["messages"], ["send", "--to", "+3620",
                                                                                       "--text", "x"]):
        line = _one_line(run(*command, "--data-dir", str(tmp_path)), 1)
        assert f"no control socket at {tmp_path / 'control.sock'}" in line


def test_install_agi_into_a_missing_directory(tmp_path: Path) -> None:
    line = _one_line(run("install-agi", "--dir", str(tmp_path / "missing")), 1)
    assert line == f"asterisk-sendsms: {tmp_path / 'missing'} is not a directory\n"


def test_check_config_finds_what_serve_would(tmp_path: Path) -> None:
    """PostgreSQL named without its driver: check-config must say so, as serve does."""
    config = tmp_path / "pg.toml"
    config.write_text("[store]\nurl = 'postgresql://gw@127.0.0.1/sms'\n[[transports]]\nurl = 'simulator'\n")
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('psycopg is not installed')\n")
    result = subprocess.run([str(RUN), "check-config", "--config", str(config)], capture_output=True, text=True,
                            timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(blocker)})
    line = _one_line(result, 2)
    assert "store.url names PostgreSQL, but psycopg is not installed" in line
