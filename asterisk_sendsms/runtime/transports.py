"""Transports: how messages leave the gateway. `build_transport` turns configuration into one."""

from asterisk_sendsms.app.transport import Transport, TransportHealth, TransportSink
from asterisk_sendsms.config import ModemSettings, SimulatorSettings, SmppSettings, TransportConfig
from asterisk_sendsms.core.errors import ConfigError
from asterisk_sendsms.edge.simulator import SimulatorTransport

__all__ = ["SimulatorTransport", "Transport", "TransportHealth", "TransportSink", "build_transport"]


def build_transport(config: TransportConfig, log_setup: tuple[str, str] = ("INFO", "text")) -> Transport:
    """`log_setup` (level, format) is how a transport's own process logs."""
    if isinstance(config.settings, SimulatorSettings):
        return SimulatorTransport(config.name, config.settings)
    if isinstance(config.settings, SmppSettings):
        # The SMPP package imports this one.
        if config.settings.process:
            from asterisk_sendsms.runtime.smpp_child import SmppProcess

            return SmppProcess(config.name, config.settings, log_setup)
        from asterisk_sendsms.edge.smpp.transport import SmppTransport

        return SmppTransport(config.name, config.settings)
    if isinstance(config.settings, ModemSettings):
        from asterisk_sendsms.edge.modem.transport import ModemTransport

        return ModemTransport(config.name, config.settings)
    raise ConfigError(f"transport {config.name!r}: unknown kind {config.kind!r}")
