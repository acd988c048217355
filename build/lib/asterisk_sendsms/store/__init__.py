"""Message stores: the `Store` protocol and its implementations."""

from ..config import StoreConfig
from .base import Store
from .sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "make_store"]


def make_store(config: StoreConfig) -> Store:
    """The store the configuration names (SQLite for now; PostgreSQL arrives with scale-out)."""
    return SqliteStore(config)
