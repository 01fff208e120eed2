"""Per-principal request rate limits: a token bucket for each caller, in one of two places.

- ``RateLimiter`` keeps its buckets in this process. Each worker process has its own, so
  with N workers (or nodes) a caller may reach N times the configured rate.
- ``SharedRateLimiter`` keeps them in the store (``rate_limit_buckets``): every worker
  process and node on one database spends from one bucket per caller, so the limit holds
  whatever their number. A worker takes tokens from the stored bucket in leases — up to
  ``LEASE_S`` worth of the rate, at least one — in one short write transaction of its own
  (never inside another; its commit does not wait for the disk,
  ``Database.write(durable=False)``), and spends them in memory until they run out or
  ``LEASE_TTL_S`` passes, when what is left lapses. Tokens leave the stored bucket before
  they are spent, so the limit is never exceeded; a caller may be refused up to one lease
  per other worker early (tokens parked there), which at the default rate is a few
  milliseconds' worth. With a rate under ``1 / LEASE_S`` per second every lease is one
  token: each request is then one transaction, and the limit exact.

Both refill at ``rate_per_s`` up to ``burst`` tokens, by the clock they are given.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from sqlalchemy import exc, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from keel.errors import KeelError, StoreError
from keel.store.database import Database
from keel.store.schema import rate_limit_buckets

LEASE_S = 0.05  # a lease holds at most this long's worth of the caller's rate
LEASE_TTL_S = 1.0  # tokens leased and not spent within this lapse (the limit stays strict)
_MAX_CALLERS = 10_000  # leases kept per process; past it they are dropped (they lapse early)


class RateLimitedError(KeelError):
    """Over the caller's request rate, or too many failed authentications from a source:
    429 with ``Retry-After``."""

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

    def take_held(self, principal: str) -> bool: ...


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

    def take_held(self, principal: str) -> bool:
        """``take`` (in memory here, so it never waits on anything)."""
        self.take(principal)
        return True


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
        self.lease = float(max(1, min(int(burst), math.floor(rate_per_s * LEASE_S))))
        self._leases: dict[str, tuple[float, float]] = {}  # caller -> (tokens, lapse at)
        self._leasing: dict[str, threading.Lock] = {}  # caller -> its lease being taken

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

    def take_held(self, principal: str) -> bool:
        """Spend one token of this process's lease for ``principal`` if it holds one;
        never touches the store (False: call ``take``)."""
        now = self._clock()
        with self._lock:
            tokens, until = self._leases.get(principal, (0.0, 0.0))
            if tokens >= 1.0 and now < until:
                self._leases[principal] = (tokens - 1.0, until)
                return True
        return False

    def take(self, principal: str) -> None:
        """Spend one token of ``principal``'s bucket: from this process's lease, or from a
        new lease taken from the store; ``RateLimitedError`` when the store has none."""
        if self.take_held(principal):
            return
        with self._lock:
            if len(self._leasing) > _MAX_CALLERS:  # bounded memory; held locks live on
                self._leasing.clear()
            leasing = self._leasing.setdefault(principal, threading.Lock())
        with leasing:  # one lease at a time per caller: threads out of tokens wait for it
            if self.take_held(principal):
                return
            now = self._clock()
            granted = self._lease(principal, now)
            if granted >= 1.0:
                with self._lock:
                    if len(self._leases) > _MAX_CALLERS:  # what lapses is never overspent
                        self._leases.clear()
                    self._leases[principal] = (granted - 1.0, now + LEASE_TTL_S)
                return
        wait = self.wait(principal)
        with self._lock:
            self.refused += 1
        raise RateLimitedError(principal, wait if wait > 0 else 1.0 / self.rate)

    def _lease(self, principal: str, now: float) -> float:
        """Take up to ``self.lease`` whole tokens from the stored bucket (refilled to
        ``now`` first); returns how many. The row is locked for the transaction (SQLite:
        the write lock; PostgreSQL: ``FOR UPDATE``), so two workers never take the same
        token."""
        bucket = rate_limit_buckets.c
        key = self._key(principal)
        create = (sqlite_insert if self._db.is_sqlite else postgresql_insert)(
            rate_limit_buckets
        ).values(key=key, tokens=self.burst, updated_at=now)
        with self._store(), self._db.write(chain=False, durable=False) as conn:
            conn.execute(create.on_conflict_do_nothing(index_elements=[bucket.key]))
            query = select(bucket.tokens, bucket.updated_at).where(bucket.key == key)
            if not self._db.is_sqlite:
                query = query.with_for_update()
            stored, updated = conn.execute(query).one()
            tokens = min(self.burst, stored + max(0.0, now - updated) * self.rate)
            granted = float(min(self.lease, math.floor(tokens)))
            conn.execute(
                update(rate_limit_buckets)
                .where(bucket.key == key)
                .values(tokens=tokens - granted, updated_at=max(now, updated))
            )
        return granted

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
