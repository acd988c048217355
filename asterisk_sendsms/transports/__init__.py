"""Transports: how messages leave the gateway. `build_transport` turns configuration into one."""

from ..config import ModemSettings, SimulatorSettings, SmppSettings, TransportConfig
from ..errors import ConfigError
from .base import Transport, TransportHealth, TransportSink
from .simulator import SimulatorTransport

__all__ = ["SimulatorTransport", "Transport", "TransportHealth", "TransportSink", "build_transport"]


def build_transport(config: TransportConfig, log_setup: tuple[str, str] = ("INFO", "text")) -> Transport:
    """`log_setup` (level, format) is how a transport's own process logs."""
    if isinstance(config.settings, SimulatorSettings):
        return SimulatorTransport(config.name, config.settings)
    if isinstance(config.settings, SmppSettings):
        # The SMPP package imports this one.
        if config.settings.process:
            from ..smpp.process import SmppProcess

            return SmppProcess(config.name, config.settings, log_setup)
        from ..smpp.transport import SmppTransport

        return SmppTransport(config.name, config.settings)
    if isinstance(config.settings, ModemSettings):
        from ..modem.transport import ModemTransport

        return ModemTransport(config.name, config.settings)
    raise ConfigError(f"transport {config.name!r}: unknown kind {config.kind!r}")
