"""Shared test helpers: free ports, the daemon started exactly as the README says, a real HTTP receiver."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import settings
from lxml import etree

from asterisk_sendsms.core.lifecycle import State, is_final
from asterisk_sendsms.core.passwords import hash_password

from .peers.fake_modem import FakeModem
from .peers.postgres import PostgresServer

# CI runs the same examples every time (a new random example must not decide whether a change lands);
# local runs keep exploring.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "run"
PEERS = REPO / "tests" / "peers"
SEED_QUERY = ("command=SendSms&Username=HTTP_User_1&Password=qwe123&Sender=%2b0615546669"
              "&Recipient=%2b0615546670&Message=Hello+world&DeliveryReportURL=http://yourapp.com/smsdelivered.php")


def seed_query(callback_url: str = "") -> str:
    """The Ozeki documentation's request as it is, its DeliveryReportURL pointed at a receiver of the test's
    (or left out): a daemon under test never posts to, or even resolves, a host outside this machine."""
    query = SEED_QUERY.replace("&DeliveryReportURL=http://yourapp.com/smsdelivered.php", "")
    return query + (f"&DeliveryReportURL={callback_url}" if callback_url else "")


# Ports for the servers tests start, below the kernel's ephemeral range (32768-60999): a port taken from that
# range is free when asked for, but a client connection of any test may take it before the server binds it
# ("address already in use" seen once in a full run).
_PORTS = range(20000, 32000)


def free_port() -> int:
    for _ in range(100):
        port = random.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port found for a test server")


@dataclass
class Daemon:
    """`./run serve ...` as a subprocess; `./run` execs, so the PID is the daemon's own."""

    data_dir: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # The tests' receivers and OzML servers listen on 127.0.0.1, which the URL policy refuses unless
    # allow-listed; "" leaves the policy as a fresh installation has it.
    allowed_networks: str = "127.0.0.1/32"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.log_path = self.data_dir.parent / f"daemon-{self.port}-{time.monotonic_ns()}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASTERISK_SENDSMS_")}
        env["ASTERISK_SENDSMS_ALLOWED_NETWORKS"] = self.allowed_networks
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(RUN), "serve", "--data-dir", str(self.data_dir), "--http", f"127.0.0.1:{self.port}",
                 *self.args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"daemon did not listen within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture
def modem_factory() -> Iterator[Callable[..., FakeModem]]:
    modems: list[FakeModem] = []

    def make(**options: Any) -> FakeModem:
        modem = FakeModem(**options)
        modems.append(modem)
        return modem

    yield make
    for modem in modems:
        modem.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(5)


def start_daemon(started: list[Daemon], data_dir: Path, *args: str, port: int | None = None) -> Daemon:
    daemon = Daemon(data_dir, list(args)) if port is None else Daemon(data_dir, list(args), port)
    started.append(daemon)
    daemon.start()
    return daemon


@dataclass
class Receiver:
    """A real HTTP server that records the form posts it receives and answers with `status`."""

    url: str
    posts: list[dict[str, str]]
    status: list[int]
    arrived: asyncio.Event
    answered: list[int] = field(default_factory=list)  # the status of every post, 2xx or not

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(self.posts)} of {count} notifications arrived: {self.posts}"
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass
        return self.posts


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    posts: list[dict[str, str]] = []
    status = [200]
    arrived = asyncio.Event()
    answered: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        answer = status[0]
        answered.append(answer)
        if answer < 300:
            posts.append({k: str(v) for k, v in form.items()})
            arrived.set()
        return web.Response(status=answer, text="ok")

    app = web.Application()
    app.router.add_post("/dlr", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Receiver(f"http://127.0.0.1:{port}/dlr", posts, status, arrived, answered)
    await runner.cleanup()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL server for the session; each test takes a database of its own."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def get_status(session: aiohttp.ClientSession, daemon: Daemon, sms_id: str,
                     user: str = "HTTP_User_1", password: str = "qwe123") -> dict[str, object]:
    async with session.get(f"{daemon.base}/api/messages/{sms_id}", headers=basic_auth(user, password)) as r:
        assert r.status == 200, await r.text()
        data: dict[str, object] = await r.json()
        return data


async def wait_final(session: aiohttp.ClientSession, daemon: Daemon, sms_id: str, timeout: float = 20.0,
                     **auth: str) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        data = await get_status(session, daemon, sms_id, **auth)
        if is_final(State(data["state"])):
            return data
        assert time.monotonic() < deadline, f"{sms_id} still {data['state']}"
        await asyncio.sleep(0.1)


def gateway_config(path: Path, transport: str, extra: str = "", lease: float = 120.0, callbacks: str = "") -> Path:
    """A daemon configuration with user alice/pw, admin ops/pw (who sees /healthz in full), one transport named
    "operator", and quick retries."""
    path.write_text(f"""
{extra}
[dispatch]
retry_initial = 0.3
retry_max = 1
poll_interval = 0.2
lease = {lease}
[callbacks]
retry_initial = 0.2
retry_max = 0.5
timeout = 1
{callbacks}
[[users]]
name = "alice"
password_hash = "{hash_password('pw')}"
[[users]]
name = "ops"
password_hash = "{hash_password('pw')}"
admin = true
[[transports]]
name = "operator"
url = "{transport}"
""")
    return path


# ---------------------------------------------------------------- the SMSC peer (npm smpp)

@dataclass
class Smsc:
    port: int
    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)

    def submits(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "submit"]

    def deliver(self, source: str, dest: str, text: str) -> None:
        """An incoming SMS, from the phone `source` to `dest`, delivered now on the receiving bind."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"source": source, "dest": dest, "text": text}) + "\n")
        self.process.stdin.flush()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"SMSC events: {self.events[-10:]}"
            await asyncio.sleep(0.05)


@pytest.fixture
def smsc_factory() -> Iterator[Callable[..., Smsc]]:
    started: list[Smsc] = []

    def start(**options: Any) -> Smsc:
        port = free_port()
        config = {"port": port, "system_id": "esme", "password": "secret", **options}
        process = subprocess.Popen(["node", str(PEERS / "smsc.js"), json.dumps(config)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        smsc = Smsc(port, process)

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                smsc.events.append(json.loads(line))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 20
        while not any(e["event"] == "listening" for e in smsc.events):
            assert process.poll() is None and time.monotonic() < deadline, "the test SMSC did not start"
            time.sleep(0.05)
        started.append(smsc)
        return smsc

    yield start
    for smsc in started:
        smsc.process.kill()
        smsc.process.wait(5)


async def send(session: aiohttp.ClientSession, daemon: Daemon, recipient: str, text: str, sender: str = "",
               report_url: str = "") -> str:
    form = {"Command": "SendSms", "Username": "alice", "Password": "pw", "Recipient": recipient, "Message": text}
    if sender:
        form["Sender"] = sender
    if report_url:
        form["DeliveryReportURL"] = report_url
    async with session.post(f"{daemon.base}/api", data=form) as response:
        root = etree.fromstring(await response.read())
    assert root.findtext("Code") == "200", etree.tostring(root)
    return root.findtext("SmsId") or ""


async def final(session: aiohttp.ClientSession, daemon: Daemon, sms_id: str, timeout: float = 20) -> dict[str, Any]:
    return await wait_final(session, daemon, sms_id, timeout, user="alice", password="pw")
