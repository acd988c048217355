"""GSM modems: PDUs and the AT conversation without I/O, and the serial transport."""
