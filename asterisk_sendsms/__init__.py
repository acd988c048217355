"""asterisk-sendsms: send SMS from Asterisk dialplans through one durable gateway (Ozeki-compatible API).

The root imports nothing, so a child process (an SMPP link, an HTTP front worker, an AGI script) loads only the
layers it uses: core <- wire <- config <- app <- store <- ops <- edge <- runtime <- cli."""

__version__ = "0.1.0"
