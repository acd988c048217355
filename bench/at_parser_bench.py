"""CPU of the AT parser on what a babbling modem sends, in the 4 KiB reads the transport hands over: bytes
without a line end, empty lines while AT+CMGS waits for its prompt, and a burst of short unsolicited lines.
Run: .venv/bin/python bench/at_parser_bench.py [path/to/at.py] (another version, e.g. from `git show`)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from types import ModuleType

READ = 4096


def load(path: str | None) -> ModuleType:
    if path is None:
        from asterisk_sendsms.wire.modem import at
        return at
    spec = importlib.util.spec_from_file_location("at_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["at_under_test"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def chunks(data: bytes) -> list[bytes]:
    return [data[i:i + READ] for i in range(0, len(data), READ)]


CASES = [
    ("1 MiB without a line end", chunks(b"A" * (1 << 20)), "AT"),
    ("256 KiB of empty lines, AT+CMGS pending", chunks(b"\n" * (256 << 10)), "AT+CMGS=23"),
    ("20,000 RING lines", chunks(b"\r\nRING\r\n" * 20_000), "AT"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?")
    at = load(parser.parse_args().path)
    for name, reads, command in CASES:
        best = float("inf")
        for _ in range(3):
            subject = at.AtParser()
            subject.command(command)
            started = time.perf_counter()
            for data in reads:
                subject.feed(data)
            best = min(best, time.perf_counter() - started)
        print(f"{name}: {best * 1000:.1f} ms")


if __name__ == "__main__":
    main()
