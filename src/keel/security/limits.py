"""Per-principal request rate limits: a token bucket for each caller, in one of two places.

- ``RateLimiter`` keeps its buckets in this process. Each worker process has its own, so
  with N workers (or nodes) a caller may reach N times the configured rate.
- ``SharedRateLimiter`` keeps them in the store (``rate_limit_buckets``): every worker
  process and node on one database spends from one bucket per caller, so the limit holds
  whatever their number. Each request costs one short write transaction of its own (a
  conditional upsert that refills and spends in one statement), never inside another,
  whose commit does not wait for the disk (``Database.write(durable=False)``).

Both refill at ``rate_per_s`` up to ``burst`` tokens, by the clock they are given.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from sqlalchemy import case, exc, literal, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keel.errors import KeelError, StoreError
from keel.store.database import Database
from keel.store.schema import rate_limit_buckets


class RateLimitedError(KeelError):
    code = "rate_limited"

    def __init__(self, principal: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many requests from {principal}; retry after {seconds} s",
            {"retry_after": seconds},
        )


class Limiter(Protocol):
    """What the API asks of a rate limiter, in-process or shared."""

    refused: int
    blocking: bool  # whether a call may wait on the store (run it off the event loop)

    def wait(self, key: str) -> float: ...

    def take(self, principal: str) -> None: ...


class RateLimiter:
    """Token buckets in this process (per worker: N workers allow N times the rate)."""

    blocking = False

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0 when it has one now); takes nothing."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, principal: str) -> None:
        """Spend one token of ``principal``'s bucket, or raise ``RateLimitedError``."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(principal, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[principal] = (tokens, now)
                self.refused += 1
                raise RateLimitedError(principal, (1.0 - tokens) / self.rate)
            self._buckets[principal] = (tokens - 1.0, now)


class SharedRateLimiter:
    """Token buckets in the store, shared by every process and node that uses it.

    ``scope`` names the limit (``api``, ``auth``), so limits with different rates keep
    separate buckets for the same caller. A clock that reads behind a bucket's last update
    (another node's clock ahead of this one) refills nothing rather than draining it.
    """

    blocking = True

    def __init__(
        self,
        db: Database,
        scope: str,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._db = db
        self._scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self.refused = 0

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0 when it has one now); takes nothing."""
        now = self._clock()
        with self._store(), self._db.read() as conn:
            row = conn.execute(
                select(rate_limit_buckets.c.tokens, rate_limit_buckets.c.updated_at).where(
                    rate_limit_buckets.c.key == self._key(key)
                )
            ).first()
        if row is None:
            return 0.0
        tokens = min(self.burst, row[0] + max(0.0, now - row[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, principal: str) -> None:
        """Spend one token of ``principal``'s bucket in the store, or raise
        ``RateLimitedError``. Refill and spend are one statement (an insert of a full bucket
        that, when the caller has one, updates it only if a token is left), so two workers
        can never both spend the last token."""
        bucket = rate_limit_buckets.c
        now = self._clock()
        elapsed = case((bucket.updated_at < now, literal(now) - bucket.updated_at), else_=0.0)
        refilled = bucket.tokens + elapsed * self.rate
        refilled = case((refilled > self.burst, literal(self.burst)), else_=refilled)
        upsert = (sqlite_insert if self._db.is_sqlite else postgresql_insert)(
            rate_limit_buckets
        ).values(key=self._key(principal), tokens=self.burst - 1.0, updated_at=now)
        upsert = upsert.on_conflict_do_update(
            index_elements=[bucket.key],
            set_={
                "tokens": refilled - 1.0,
                "updated_at": case((bucket.updated_at < now, now), else_=bucket.updated_at),
            },
            where=refilled >= 1.0,
        )
        with self._store(), self._db.write(chain=False, durable=False) as conn:
            # A row back: inserted or spent (rowcount is not portable for an upsert).
            spent = conn.execute(upsert.returning(bucket.tokens)).first() is not None
        if not spent:
            wait = self.wait(principal)
            with self._lock:
                self.refused += 1
            raise RateLimitedError(principal, wait if wait > 0 else 1.0 / self.rate)

    def _key(self, key: str) -> str:
        return f"{self._scope}|{key}"

    def _store(self) -> AbstractContextManager[None]:
        return _store_errors(self._db)


@contextmanager
def _store_errors(db: Database) -> Iterator[None]:
    """A database failure is a ``StoreError`` (503) naming the shared limits."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise StoreError(
            f"the shared rate limits in {db.display_url} cannot be read or written "
            f"({type(error).__name__}); check the database",
            {"table": "rate_limit_buckets"},
        ) from error
