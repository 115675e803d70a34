"""A thread-safe rate limiter that never lets calls start faster than the budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces call starts evenly: at most `per_second` in any second and `per_minute` in any minute.

    Even spacing (rather than bursts inside a window) keeps every sliding window the server may use under
    its limit; `safety` widens the spacing so loopback or network jitter cannot squeeze two starts closer
    together than the server tolerates.
    """

    def __init__(
        self,
        per_second: float,
        per_minute: float,
        safety: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0 or per_minute <= 0:
            raise ValueError("rate limits must be positive")
        self.interval = max(1.0 / per_second, 60.0 / per_minute) * (1.0 + safety)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0

    @property
    def rate(self) -> float:
        """Calls per second this limiter admits at most."""
        return 1.0 / self.interval

    def acquire(self) -> None:
        """Block until this caller may start one call."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
