"""The commands about messages, through the running daemon: send (one, or a CSV campaign), messages (the
list), status, cancel, tail (the live events)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from asterisk_sendsms.cli.control import EXIT_ERROR, CliError, Control, configuration, control, when
from asterisk_sendsms.config import Config
from asterisk_sendsms.core.lifecycle import FINAL_STATES, SETTLED_STATES, State
from asterisk_sendsms.core.traffic import CSV_PRIORITY, DEFAULT_PRIORITY
from asterisk_sendsms.ops.logs import printable

__all__ = ["cancel", "listed", "messages", "send", "status", "tail"]


def print_status(data: dict[str, Any]) -> None:
    rows = [("SmsId", data["sms_id"]), ("State", data["state"]), ("Recipient", data["recipient"]),
            ("Sender", data["sender"] or "-"), ("User", data["username"]),
            ("Coding", f"{data['coding']}, {data['part_count']} part(s)"), ("Transport", data["transport"] or "-"),
            ("Attempts", str(data["attempts"])), ("Created", when(data["created_at"])),
            ("Updated", when(data["updated_at"]))]
    if data["error_code"] or data["error_text"]:
        rows.append(("Error", f"{data['error_code']} {data['error_text']}".strip()))
    if data["callback_url"]:
        rows.append(("Callback", f"{data['callback_url']} ({data['callback_state'] or 'not yet'})"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {printable(value)}")
    if data["parts"]:
        print("Parts:")
        for part in data["parts"]:
            error = f" err {part['error_code']}" if part["error_code"] else ""
            print(printable(f"  {part['index']}  {part['smsc_id'] or '-':<24} {part['state']}{error}"))
    print("History:")
    for entry in data["history"]:
        print(f"  {when(entry['at'])}  {entry['state']:<11} {printable(entry['detail'])}")


async def send(args: argparse.Namespace) -> int:
    config = configuration(args)
    if args.csv is not None:
        return await _send_bulk(config, args)
    if not args.text:
        raise CliError("--text is required")
    status, reply = await control(config, "POST", "/api/messages", {
        "recipient": args.to, "text": args.text, "sender": args.sender, "delivery_report_url": args.report_url,
        "priority": args.priority or DEFAULT_PRIORITY.value, "validity_period": args.validity, "send_at": args.at})
    if status != 201:
        raise CliError(f"not sent: {reply.get('error', reply)}")
    sms_id = reply["sms_id"]
    print(sms_id)
    deadline = time.monotonic() + args.wait
    while args.wait > 0:
        status, data = await control(config, "GET", f"/api/messages/{sms_id}")
        if data.get("state") in FINAL_STATES or time.monotonic() >= deadline:
            print(data.get("state", reply))
            return 0 if data.get("state") in SETTLED_STATES else EXIT_ERROR
        await asyncio.sleep(0.2)
    return 0


def _rows(path: Path, template: str | None) -> list[tuple[int, str, str, str]]:
    """(line number, recipient, text, send_at) of every row; a row that cannot be made is reported, not sent."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            # Spreadsheets in many locales save with ';' (the comma is their decimal mark): sniff the header.
            header = handle.readline()
            handle.seek(0)
            try:
                dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(header, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(handle, dialect=dialect)
            if not reader.fieldnames:
                raise CliError(f"{path} is empty")
            fields = [f.strip().lower() for f in reader.fieldnames]
            reader.fieldnames = fields
            number_column = next((f for f in ("recipient", "number", "to", "phone") if f in fields), fields[0])
            if template is None and "text" not in fields:
                raise CliError(f"{path} has no 'text' column: give --text")
            rows = []
            for row in reader:
                values = {k: (v or "").strip() for k, v in row.items() if k}
                text = template.format_map(_Missing(values)) if template is not None else values.get("text", "")
                rows.append((reader.line_num, values.get(number_column, ""), text, values.get("send_at", "")))
            return rows
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not a UTF-8 CSV file: {exc}") from None


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise CliError(f"--text names {{{key}}}, which is not a column of the CSV file")


async def _send_bulk(config: Config, args: argparse.Namespace) -> int:
    rows = _rows(args.csv, args.text)
    refused: list[tuple[int, str, str]] = []
    accepted = 0
    started = time.monotonic()
    interactive = sys.stderr.isatty()
    async with Control(config) as control:
        for done, (line, recipient, text, send_at) in enumerate(rows, 1):
            await asyncio.sleep(max(0.0, started + (done - 1) / args.rate - time.monotonic()))
            status, reply = await control.call("POST", "/api/messages", {
                "recipient": recipient, "text": text, "sender": args.sender,
                "delivery_report_url": args.report_url, "priority": args.priority or CSV_PRIORITY.value,
                "validity_period": args.validity, "send_at": send_at or args.at})
            if status == 201:
                accepted += 1
            else:
                refused.append((line, recipient, str(reply.get("error", reply))))
            if interactive or done == len(rows) or done % 100 == 0:
                width = 30
                filled = width * done // len(rows)
                print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{len(rows)}", end="" if interactive
                      else "\n", file=sys.stderr, flush=True)
    if interactive:
        print(file=sys.stderr)
    elapsed = time.monotonic() - started
    for line, recipient, error in refused:
        print(printable(f"line {line}: {recipient or '(no recipient)'}: {error}"))
    print(f"{'rows':<10} {len(rows)}\n{'accepted':<10} {accepted}\n{'refused':<10} {len(refused)}\n"
          f"{'seconds':<10} {elapsed:.1f}\n{'per second':<10} {len(rows) / max(elapsed, 1e-9):.1f}")
    return 0 if not refused else EXIT_ERROR


async def tail(args: argparse.Namespace) -> int:
    async with Control(configuration(args)) as control:
        async for event in control.stream("/api/events"):
            if args.json:
                print(json.dumps(event, ensure_ascii=False), flush=True)
                continue
            details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "event", "sms_id"))
            print(printable(f"{when(event['time'])}  {event['event']:<11} {event['sms_id']}  {details}"), flush=True)
    return 0


async def messages(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.state or args.scheduled:
        query["state"] = State.SCHEDULED.value if args.scheduled else args.state
    if args.priority:
        query["priority"] = args.priority
    if args.recipient:
        query["recipient"] = args.recipient
    if args.since:
        query["since"] = str(time.time() - args.since)
    data = await listed(configuration(args), f"/api/messages?{urlencode(query)}", args.json)
    if data is None:
        return 0
    print(f"{'created':<23}  {'SmsId':<36}  {'state':<11}  {'class':<11}  {'leaves at':<23}  {'recipient':<16}  text")
    for message in data:
        text = message["text"].replace("\n", " ")
        leaves = when(message["send_at"]) if message.get("send_at") else "-"
        print(printable(f"{when(message['created_at'])}  {message['sms_id']}  {message['state']:<11}  "
                        f"{message['priority']:<11}  {leaves:<23}  {message['recipient']:<16}  "
                        f"{text[:40] + ('…' if len(text) > 40 else '')}"))
    return 0


async def listed(config: Config, path: str, as_json: bool) -> list[dict[str, Any]] | None:
    """A list the daemon answers `path` with; printed as JSON (and None returned) when `as_json`."""
    status, data = await control(config, "GET", path)
    if status != 200:
        raise CliError(data.get("error", str(data)))
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return None
    return list(data)


def sms_id_of(text: str) -> str:
    """The SmsId as the daemon's paths take it: an empty one, '..' or 'a/b' would make another request."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        shown = printable(text[:60]) + ("…" if len(text) > 60 else "")
        raise CliError(f"'{shown}' is not an SmsId (a UUID such as 01a23c69-d9db-7395-96c1-458c8912add6)") from None


async def status(args: argparse.Namespace) -> int:
    status, data = await control(configuration(args), "GET", f"/api/messages/{sms_id_of(args.sms_id)}")
    if status != 200:
        raise CliError(data.get("error", str(data)))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print_status(data)
    return 0


async def cancel(args: argparse.Namespace) -> int:
    status, data = await control(configuration(args), "DELETE", f"/api/messages/{sms_id_of(args.sms_id)}")
    if status != 200:
        raise CliError(f"not cancelled: {data.get('error', data)}")
    print(f"{data['sms_id']} {data['state']}")
    return 0
