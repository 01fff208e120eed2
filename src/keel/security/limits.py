"""Per-principal request rate limits: a token bucket for each caller, in this process.

Each worker process keeps its own buckets, so with N workers a caller may reach N times
the configured rate; set ``api.rate_per_s`` with that in mind.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from keel.errors import KeelError


class RateLimitedError(KeelError):
    code = "rate_limited"

    def __init__(self, principal: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many requests from {principal}; retry after {seconds} s",
            {"retry_after": seconds},
        )


class RateLimiter:
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
