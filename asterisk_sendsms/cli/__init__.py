"""The `asterisk-sendsms` command: its grammar (`parser`), the commands about messages
(`messages`) and about the gateway (`admin`), and `main`, which runs one. Errors are one line
on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from asterisk_sendsms.cli.admin import check_config, hash_password_command, install_agi, migrate, optout, serve
from asterisk_sendsms.cli.control import EXIT_ERROR, EXIT_USAGE, CliError
from asterisk_sendsms.cli.messages import cancel, messages, send, status, tail
from asterisk_sendsms.cli.parser import build_parser
from asterisk_sendsms.core.errors import ConfigError, SmsGatewayError
from asterisk_sendsms.store.files import PRIVATE_UMASK

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the command's own parser, with its usage rather than the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Files this program writes hold message texts and credentials: its own unless it says otherwise.
    os.umask(PRIVATE_UMASK)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "send":
            return asyncio.run(send(args))
        if args.command == "status":
            return asyncio.run(status(args))
        if args.command == "cancel":
            return asyncio.run(cancel(args))
        if args.command == "messages":
            return asyncio.run(messages(args))
        if args.command == "tail":
            return asyncio.run(tail(args))
        if args.command == "check-config":
            return check_config(args)
        if args.command == "optout":
            return asyncio.run(optout(args))
        if args.command == "migrate":
            return asyncio.run(migrate(args))
        if args.command == "install-agi":
            return install_agi(args)
        return hash_password_command(args)
    except ConfigError as exc:
        print(f"asterisk-sendsms: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except (CliError, SmsGatewayError) as exc:
        print(f"asterisk-sendsms: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
