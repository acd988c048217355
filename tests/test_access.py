"""Unit tests of who may do what at the Asterisk edges: the Call command's permission and the configuration
of calls and FastAGI access."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asterisk_sendsms.app.calls import CallService, check_call
from asterisk_sendsms.config import LOOPBACK, AsteriskConfig, CallbackConfig, Overrides, UserConfig, load_config
from asterisk_sendsms.core.errors import ConfigError, ForbiddenUser, InvalidParameter
from asterisk_sendsms.core.passwords import hash_password

from .waits import established_to, wait_until

CALLER = UserConfig("ivr", can_call=True, call_destinations=("+3620", "06", "PJSIP/1??"))


class Recorder:
    connected = True

    def __init__(self) -> None:
        self.endpoints: list[str] = []

    async def originate(self, endpoint: str, url: str, caller_id: str | None, user: UserConfig) -> str:
        self.endpoints.append(endpoint)
        return "channel-1"


def test_calls_are_off_until_granted() -> None:
    assert not UserConfig("a").can_call
    with pytest.raises(ForbiddenUser, match="a may not place calls"):
        check_call(UserConfig("a"), "+36201234567", ())
    with pytest.raises(ForbiddenUser, match="may not place calls"):  # SMS destinations do not grant calls
        check_call(UserConfig("a", allowed_destinations=("+36",)), "+36201234567", ("PJSIP/*",))


def test_numbers_need_a_call_destination_prefix() -> None:
    assert check_call(CALLER, "+36201234567", ()) is None
    assert check_call(CALLER, "0630123456", ()) is None
    with pytest.raises(ForbiddenUser, match=r"ivr may not call \+4420123456 \(not in call_destinations\)"):
        check_call(CALLER, "+4420123456", ())
    with pytest.raises(ForbiddenUser):  # an endpoint pattern is not a number prefix
        check_call(UserConfig("e", can_call=True, call_destinations=("PJSIP/*",)), "1234", ())
    assert check_call(UserConfig("any", can_call=True, call_destinations=("",)), "+19005550100", ()) is None


def test_endpoints_need_the_site_and_the_user() -> None:
    with pytest.raises(ForbiddenUser, match=r"dialling endpoints such as PJSIP/100 is not allowed here"):
        check_call(CALLER, "PJSIP/100", ())  # the default: no endpoint at all
    assert check_call(CALLER, "PJSIP/100", ("PJSIP/*",)) == "PJSIP/100"
    with pytest.raises(ForbiddenUser, match=r"ivr may not call PJSIP/2000"):
        check_call(CALLER, "PJSIP/2000", ("PJSIP/*",))
    with pytest.raises(ForbiddenUser, match="not allowed here"):
        check_call(CALLER, "Local/100@from-internal", ("PJSIP/*",))
    for hostile in ("PJSIP/100&PJSIP/200", "PJSIP/1${EXTEN}", "Local/1@ctx,then", "PJSIP/1 2", "PJSIP/1\r\nx"):
        with pytest.raises(InvalidParameter, match="'Dialed'"):
            check_call(CALLER, hostile, ("*",))


async def test_the_service_refuses_before_dialling() -> None:
    recorder = Recorder()
    service = CallService([recorder], AsteriskConfig(call_endpoints=("PJSIP/1*",)), CallbackConfig())
    with pytest.raises(ForbiddenUser):
        await service.call(UserConfig("a"), "+36201234567", "http://example.com/x", None)
    with pytest.raises(ForbiddenUser):
        await service.call(CALLER, "+44201234567", "http://example.com/x", None)
    with pytest.raises(ForbiddenUser):
        await service.call(CALLER, "Local/1@x", "http://example.com/x", None)
    assert recorder.endpoints == []
    assert await service.call(CALLER, "+36 20 123 4567", "http://example.com/x", None) == "channel-1"
    assert await service.call(CALLER, "PJSIP/101", "http://example.com/x", None) == "channel-1"
    assert recorder.endpoints == ["Local/+36201234567@from-internal", "PJSIP/101"]


def config_text(tmp_path: Path, users: str = "", asterisk: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f"""
[[transports]]
url = "simulator"
[[users]]
name = "ivr"
password_hash = "{hash_password('pw')}"
{users}
[asterisk]
{asterisk}
""")
    return path


def load(path: Path, **overrides: str) -> AsteriskConfig:
    return load_config(Overrides(config_file=path, **overrides), env={}).asterisk  # type: ignore[arg-type]


def test_call_settings_load(tmp_path: Path) -> None:
    config = load_config(Overrides(config_file=config_text(
        tmp_path, 'can_call = true\ncall_destinations = ["+3620", "PJSIP/1??"]',
        'call_endpoints = ["PJSIP/*"]')), env={})
    assert config.users[0].can_call and config.users[0].call_destinations == ("+3620", "PJSIP/1??")
    assert config.asterisk.call_endpoints == ("PJSIP/*",)
    assert not load_config(Overrides(config_file=config_text(tmp_path)), env={}).users[0].can_call


@pytest.mark.parametrize(("users", "asterisk", "message"), [
    ("can_call = true", "", "users[0].call_destinations: user 'ivr' may call (can_call) but no destination"),
    ('can_call = true\ncall_destinations = ["+36x"]', "", "users[0].call_destinations: '+36x' is neither"),
    ('can_call = true\ncall_destinations = ["/x"]', "", "users[0].call_destinations: '/x' is not a TECH/resource"),
    ("", 'call_endpoints = ["*"]', "asterisk.call_endpoints: '*' is not a TECH/resource pattern"),
    ("", 'fastagi_allowed_clients = ["10.0.0.0/33"]', "asterisk.fastagi_allowed_clients:"),
    ("", 'fastagi_secret = "short"', "asterisk.fastagi_secret: use at least 16 characters"),
    ("", 'fastagi = "0.0.0.0:4573"', "asterisk.user: FastAGI listens on 0.0.0.0:4573, beyond this machine"),
    ("", 'user = "nobody"', "asterisk.user: no user named 'nobody'"),
])
def test_bad_access_settings_name_the_key(tmp_path: Path, users: str, asterisk: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(config_text(tmp_path, users, asterisk))
    assert message in raised.value.message


def test_fastagi_access_defaults_and_settings(tmp_path: Path) -> None:
    defaults = load(config_text(tmp_path), fastagi="4573")
    assert str(defaults.fastagi) == "127.0.0.1:4573"  # loopback unless told otherwise
    assert defaults.fastagi_allowed_clients == LOOPBACK and defaults.fastagi_secret is None
    assert defaults.user is None  # the built-in principal, on loopback only
    configured = load(config_text(tmp_path, "", 'fastagi = "0.0.0.0:4573"\nuser = "ivr"\n'
                                                'fastagi_allowed_clients = ["192.0.2.10/32"]\n'
                                                'fastagi_secret = "0123456789abcdef"'))
    assert [str(n) for n in configured.fastagi_allowed_clients] == ["192.0.2.10/32"]
    assert configured.fastagi_secret == "0123456789abcdef" and configured.user == "ivr"
    assert "0123456789abcdef" not in repr(configured)
    with pytest.raises(ConfigError, match="beyond this machine"):  # the command line cannot sidestep it
        load(config_text(tmp_path), fastagi="[::]:4573")


def test_fastagi_beyond_loopback_without_a_user_stops_the_start_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "c.toml"
    config.write_text('[[transports]]\nurl = "simulator"\n')
    result = subprocess.run([sys.executable, "-m", "asterisk_sendsms", "serve", "--config", str(config),
                             "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
                             "--fastagi", "0.0.0.0:4573"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "asterisk-sendsms: configuration error: asterisk.user: FastAGI listens on 0.0.0.0:4573, beyond this "
        "machine: name the [[users]] entry whose limits its sends get (asterisk.user)"]


class Backend:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, recipient: str, text: str, sender: str | None, report_url: str | None) -> str:
        self.sent.append(recipient)
        return f"id-{len(self.sent)}"

    async def state(self, sms_id: str) -> tuple[Any, str]:
        from asterisk_sendsms.core.lifecycle import State
        return State.SUBMITTED, ""

    @contextlib.asynccontextmanager
    async def watching(self, sms_id: str) -> AsyncIterator[Any]:
        yield asyncio.sleep


def fastagi_server(port: int, backend: Backend) -> Any:
    from asterisk_sendsms.config import HostPort, PromptConfig
    from asterisk_sendsms.edge.asterisk.fastagi import FastAgiServer
    return FastAgiServer(HostPort("127.0.0.1", port), backend, None, PromptConfig(), None,  # type: ignore[arg-type]
                         LOOPBACK, None)


async def served(port: int, query: str) -> dict[str, str]:
    from .peers.fake_asterisk import FakeChannel, base_environment, run_fastagi
    channel = FakeChannel(base_environment(f"agi://h/sendsms?{query}", agi_network="yes",
                                           agi_network_script=f"sendsms?{query}"), Path("/nonexistent"))
    await run_fastagi(channel, "127.0.0.1", port, timeout=20)
    return channel.variables


async def test_fastagi_connections_made_before_it_runs_wait_in_the_backlog() -> None:
    """The daemon announces itself once FastAGI has bound; a call arriving before the server task starts is
    queued by the kernel, not refused."""
    from .conftest import free_port
    backend, port = Backend(), free_port()
    server = fastagi_server(port, backend)
    await server.bind()
    early = asyncio.create_task(served(port, "recipient=%2B3620123456&message=early&announce=no"))
    await wait_until(lambda: established_to(port) == 1)  # connected and waiting (a refused one would have failed)
    assert not early.done()
    running = asyncio.create_task(server.run())
    try:
        assert (await early)["SMS_STATUS"] == "SENT" and backend.sent == ["+3620123456"]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_fastagi_closes_connections_beyond_its_cap(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import asterisk_sendsms.edge.asterisk.fastagi as fastagi_module

    from .conftest import free_port
    monkeypatch.setattr(fastagi_module, "MAX_CONNECTIONS", 3)
    backend, port = Backend(), free_port()
    server = fastagi_server(port, backend)
    await server.bind()
    running = asyncio.create_task(server.run())
    idle = []
    try:
        for _ in range(3):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        await wait_until(lambda: server._open == 3)  # each accepted and holding a slot
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once, unread
        writer.close()
        assert "3 connections are open" in caplog.text
        for _, idle_writer in idle:
            idle_writer.close()
        idle.clear()
        deadline = asyncio.get_running_loop().time() + 10
        # The slots free up as the idle peers' connections end; until then a call is closed unserved.
        while "SMS_STATUS" not in (variables := await served(port, "recipient=%2B3620123456&message=after"
                                                                   "&announce=no")):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert variables["SMS_STATUS"] == "SENT"
    finally:
        for _, idle_writer in idle:
            idle_writer.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_fastagi_serves_again_when_run_again() -> None:
    """The daemon's supervision starts an ended loop again: the FastAGI server then binds anew."""
    from .conftest import free_port
    backend, port = Backend(), free_port()
    server = fastagi_server(port, backend)
    for attempt in range(2):
        running = asyncio.create_task(server.run())
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    variables = await served(port, f"recipient=%2B3620123456&message=run+{attempt}&announce=no")
                    break
                except ConnectionRefusedError:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
            assert variables["SMS_STATUS"] == "SENT"
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert len(backend.sent) == 2
