"""`python -m asterisk_sendsms`: the same as the `asterisk-sendsms` command."""

import sys

from .cli import main

sys.exit(main())
