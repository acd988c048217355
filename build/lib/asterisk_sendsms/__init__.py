"""asterisk-sendsms: send SMS from Asterisk dialplans through one durable gateway (Ozeki-compatible API)."""

from .config import Config, load_config
from .errors import SmsGatewayError
from .lifecycle import State
from .service import Accepted, SmsService

__all__ = ["Accepted", "Config", "SmsGatewayError", "SmsService", "State", "__version__", "load_config"]

__version__ = "0.1.0"
