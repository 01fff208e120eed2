"""Opening the database: engine set-up per backend, migrations, and write transactions."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.pool import NullPool

from keel.errors import MissingExtraError, StoreError

try:
    import fcntl
except ImportError:  # not on Windows: writers there rely on SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_LOCK_KEY = 0x4B45454C  # "KEEL": the advisory lock every PostgreSQL writer takes


class WriteQueue:
    """Keel's writers to one SQLite file take turns here before BEGIN IMMEDIATE.

    SQLite makes a writer that finds the file locked sleep and retry (1, 2, 5, 10, 15 ms…),
    which is where a busy server's slowest requests came from. Threads of one process wait
    on a lock and processes on ``flock`` of a file beside the database, polled at most a
    millisecond apart; the next writer starts within about a millisecond of the last
    commit. SQLite's own lock still guards the file against anything else that writes it.
    """

    def __init__(self, path: Path, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._thread_lock:
            fd = self._open()
            self._acquire(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as error:
                raise StoreError(
                    f"cannot open the write lock file {self.path}: {error.strerror}",
                    {"path": str(self.path)},
                ) from error
        return self._fd

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + self._timeout_s
        pause = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"the database is locked: another process held {self.path} for "
                        f"over {self._timeout_s:.0f} s",
                        {"path": str(self.path)},
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass
class Database:
    """The engine Keel works through, and how to take the write lock on it."""

    engine: Engine
    url: str
    queue: WriteQueue | None = field(default=None, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(
        self, chain: bool = True, using: Connection | None = None, durable: bool = True
    ) -> Iterator[Connection]:
        """A transaction that holds the database's write lock from its first statement.

        SQLite: BEGIN IMMEDIATE, after this process's turn in the file's write queue.
        PostgreSQL: a transaction-scoped advisory lock. Either way, readers of the chain head
        inside it see the newest head, and no other process can append (or take guardrail
        window capacity) until it commits. Writes that touch neither the chain nor the
        windows (the audit trail) pass ``chain=False`` and, on PostgreSQL, do not wait for
        that lock. ``using`` is a connection the caller keeps open (the ledger writer's),
        otherwise one is taken from the pool for this transaction (after the turn, never
        before: a connection held while waiting for the turn could starve the holder).

        ``durable=False`` is for state that may be lost to a power failure (never to a
        process crash), such as rate-limit buckets, never the ledger: the commit does not
        wait for the disk (SQLite: ``synchronous = NORMAL`` on the connection for this
        transaction and ``FULL`` again before it is released; PostgreSQL:
        ``synchronous_commit`` off for the transaction).
        """
        turn = self.queue.turn() if self.queue is not None else nullcontext()
        with turn, nullcontext(using) if using is not None else self.engine.connect() as plain:
            lazy = _lazy_sqlite_commit(plain) if not durable and self.is_sqlite else nullcontext()
            with lazy:
                conn = plain.execution_options(keel_immediate=True)
                with conn.begin():
                    if chain and not self.is_sqlite:
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
                    if not durable and not self.is_sqlite:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    yield conn

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return _redact(self.url)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees the store as of its first statement, whatever is
        committed meanwhile: for reads that compare tables with each other (verification)
        while a server keeps writing. A SQLite read transaction is one already (WAL);
        PostgreSQL needs REPEATABLE READ."""
        with self.engine.connect() as plain:
            conn = plain
            if not self.is_sqlite:
                conn = plain.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()
        if self.queue is not None:
            self.queue.close()


@contextmanager
def _lazy_sqlite_commit(plain: Connection) -> Iterator[None]:
    """``synchronous = NORMAL`` on this SQLite connection while the block runs (WAL: the
    commit is safe from a process crash, not from a power failure), ``FULL`` again after;
    a connection that cannot be set back is discarded, never returned to the pool."""
    raw: Any = plain.connection.driver_connection  # sqlite3, in autocommit between BEGINs
    raw.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        try:
            raw.execute("PRAGMA synchronous = FULL")
        except BaseException:
            plain.invalidate()
            raise


def _sqlite_engine(url: str) -> Engine:
    path = url[len("sqlite:///") :]
    if path and path != ":memory:":
        target = Path(path)
        if target.is_dir():
            raise StoreError(f"cannot open database {path}: it is a directory", {"url": url})
        if not target.parent.is_dir():
            raise StoreError(
                f"cannot open database {path}: folder {target.parent} does not exist",
                {"url": url},
            )
    engine = create_engine(url, poolclass=NullPool if not path or path == ":memory:" else None)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's own is deferred-only).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed ledger entry survives power loss, not only a crash.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("keel_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_database(url: str, migrate: bool = True) -> Database:
    """Open (and by default migrate) the database at ``url``; raise ``StoreError`` if unusable.

    With ``migrate=False`` (reading and verifying only) a SQLite file that does not exist is
    an error, not a new empty database.
    """
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    if not migrate and path and path != ":memory:" and not Path(path).exists():
        raise StoreError(
            f"no Keel ledger at {path}: the database file does not exist "
            "(check database_url in keel.yaml or KEEL_DATABASE_URL)",
            {"url": url},
        )
    try:
        if url.startswith("sqlite:"):
            engine = _sqlite_engine(url)
        elif url.startswith("postgresql"):
            engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
        else:
            raise StoreError(
                f"unsupported database URL {_redact(url)}: use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB",
                {"url": _redact(url)},
            )
    except exc.ArgumentError as error:
        raise StoreError(
            f"database URL {_redact(url)} is not valid: {error}", {"url": _redact(url)}
        ) from error
    except ModuleNotFoundError as error:
        if url.startswith("postgresql"):
            raise MissingExtraError("postgres", "a PostgreSQL database") from error
        raise StoreError(
            f"no driver for database URL {_redact(url)}: {error.name} is not installed",
            {"url": _redact(url)},
        ) from error
    queue = WriteQueue(Path(f"{path}.lock")) if path and path != ":memory:" else None
    db = Database(engine, url, queue if fcntl is not None else None)
    if migrate:
        try:
            upgrade(db)
        except exc.SQLAlchemyError as error:
            db.close()
            cause = str(getattr(error, "orig", error)).splitlines()[0]
            raise StoreError(
                f"cannot open database {_redact(url)}: {cause}",
                {"url": _redact(url)},
            ) from error
    return db


def upgrade(db: Database) -> None:
    """Bring the schema to the newest migration, one process at a time."""
    from alembic import command  # noqa: PLC0415 - alembic is slow to import; only here
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    turn = db.queue.turn() if db.queue is not None else nullcontext()
    with turn, db.engine.connect() as plain:
        # Under the write lock: a second process waits, then finds the schema current.
        conn = plain.execution_options(keel_immediate=True)
        if not db.is_sqlite:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({WRITE_LOCK_KEY})")
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        finally:
            if not db.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({WRITE_LOCK_KEY})")
                conn.commit()


def _redact(url: str) -> str:
    """Hide a password in a URL before it reaches a message or a log."""
    try:
        from sqlalchemy.engine import make_url  # noqa: PLC0415

        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<invalid url>"
