"""Client-side rate limiting: a thread-safe token bucket.

Each upstream client gets its own bucket so that one slow or chatty source
cannot use up another source's API quota.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    """Allow `rate` acquisitions per second on average, `burst` at once.

    Callers reserve a token under the lock and then sleep outside it, so the
    bucket may go negative: each waiter sleeps for exactly its own place in
    the queue and no thread holds the lock while sleeping.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        # Default burst: one second's worth of requests, but at least one.
        burst = max(1.0, rate) if burst is None else burst
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst  # start full: the first requests go at once
        self._updated = clock()

    def acquire(self) -> float:
        """Take one token, sleeping if none is available; return seconds waited."""
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def _reserve(self) -> float:
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._updated = now
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._tokens -= 1
            return -self._tokens / self.rate if self._tokens < 0 else 0.0
