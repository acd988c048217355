"""Helpers the benchmarks share: ports, memory readings, and the daemon started as users start it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
# scrypt hash of "qwe123", the Ozeki example's password
DEMO_HASH = "scrypt$16384$8$1$mxSUkJRQQ9zX+WtAUwL62A$RK5n5r627B4q69RmpquymFuo+XJK4eJhn8ANWtsdQmw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS:") / 1024


def cpu_seconds(*pids: int) -> float:
    """User plus system CPU time the processes have used so far (all their threads)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def with_children(pid: int) -> list[int]:
    """The process and its children (the daemon and its HTTP front workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def peak_rss_mib(*pids: int) -> float:
    return sum(_status_kib(pid, "VmHWM:") for pid in pids) / 1024


class Daemon:
    """`./run serve` with a configuration of the benchmark's own (a user with DEMO_HASH is prepended)."""

    def __init__(self, config: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="sendsms-bench-"))
        (self.work / "bench.toml").write_text(f'[[users]]\nname = "HTTP_User_1"\npassword_hash = "{DEMO_HASH}"\n'
                                              + config)
        self.port = free_port()
        self._log: IO[bytes] = (self.work / "daemon.log").open("wb")
        self.process = subprocess.Popen(
            [str(REPO / "run"), "serve", "--config", str(self.work / "bench.toml"), "--data-dir", str(self.work),
             "--http", f"127.0.0.1:{self.port}", "--log-level", "WARNING"], stdout=self._log, stderr=self._log)
        wait_port(self.port)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api?command=SendSms&Username=HTTP_User_1&Password=qwe123"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            # Reported, not fatal: the measurement is taken; the daemon's log says what its shutdown waited for.
            log = (self.work / "daemon.log").read_text(errors="replace")
            print(f"bench: the daemon did not stop within 60 s; killed. Its log ends:\n{log[-3000:]}", file=sys.stderr)
            for pid in with_children(self.process.pid):
                os.kill(pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()
