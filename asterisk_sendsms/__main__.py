"""`python -m asterisk_sendsms`: the same as the `asterisk-sendsms` command."""

import sys

from asterisk_sendsms.cli import main

sys.exit(main())
