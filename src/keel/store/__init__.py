"""Storage: SQLAlchemy Core tables, migrations and transactions (SQLite by default)."""

from keel.store.database import Database, open_database

__all__ = ["Database", "open_database"]
