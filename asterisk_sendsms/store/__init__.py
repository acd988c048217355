"""Message stores: the `Store` protocol, SQLite (one node, embedded) and PostgreSQL (several nodes)."""

from asterisk_sendsms.app.store import Store
from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.core.errors import ConfigError
from asterisk_sendsms.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "make_store"]


def make_store(config: StoreConfig) -> Store:
    """PostgreSQL when the configuration names a database URL, otherwise the SQLite file."""
    if config.url is None:
        return SqliteStore(config)
    try:
        from asterisk_sendsms.store.postgres import PostgresStore  # psycopg is needed only by those who use it
    except ImportError:
        raise ConfigError("store.url names PostgreSQL, but psycopg is not installed: "
                          "pip install 'asterisk-sendsms[postgresql]'") from None
    return PostgresStore(config)
