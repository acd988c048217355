"""SMPP 3.4: PDU codec, receipt parsing, the session state machine and the asyncio transport."""
