"""What the gateway keeps on disk is its own: the data directory 0700, the store's files 0600, whatever mode an
earlier version left them with. (New files get that from the umask `asterisk-sendsms` sets at start.)"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from asterisk_sendsms.core.errors import ServiceUnavailable

__all__ = ["PRIVATE_UMASK", "make_private", "private_dir"]

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077


def make_private(path: Path) -> None:
    """Take group and other permissions away from `path` if it has any (it holds message texts)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)
            log.info("%s was readable by other users (mode %o): now %o", path, mode, mode & 0o700)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc.strerror)


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) as a directory only its owner may enter, or make it so."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot create the directory {path}: {exc.strerror or exc}") from None
    make_private(path)
