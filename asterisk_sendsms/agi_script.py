"""The entry points Asterisk's process AGI launchers import (`agi-bin/*.agi`, and those `install-agi` writes):
their path stays here whatever moves inside the package, so a launcher an earlier version installed keeps working
after an upgrade."""

from asterisk_sendsms.edge.asterisk.agi_script import main, ozml_main

__all__ = ["main", "ozml_main"]
