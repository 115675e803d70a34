"""A thread-safe rate limiter of one process, and the interface every Cademi budget offers the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

WIDEN_FACTOR = 1.5
WIDEN_FOR_S = 120.0


class CallBudget(Protocol):
    """What the Cademi client needs of a budget: wait for the right to start a call; hear of a breach."""

    @property
    def rate(self) -> float: ...

    def acquire(self) -> None: ...

    def breached(self) -> None: ...


class RateLimiter:
    """Spaces call starts evenly: at most `per_second` in any second and `per_minute` in any minute, within one
    process (the school-wide budget across processes is budget.FleetBudget).

    Callers pass one at a time through a gate, and the next start is counted from the moment the previous
    caller actually left it: a thread that wakes up late pushes the next start later instead of letting it
    crowd in. `safety` widens the spacing so network jitter cannot squeeze two arrivals closer than the
    server tolerates; after a breach the spacing widens for a while.
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
        self._gate = threading.Lock()
        self._next_start = float("-inf")
        self._widen_until = float("-inf")

    @property
    def rate(self) -> float:
        """Calls per second this limiter admits at most."""
        return 1.0 / self.interval

    def acquire(self) -> None:
        """Block until this caller may start one call."""
        with self._gate:
            wait = self._next_start - self._clock()
            if wait > 0:
                self._sleep(wait)
            started = self._clock()
            widened = started < self._widen_until
            self._next_start = started + self.interval * (WIDEN_FACTOR if widened else 1.0)

    def breached(self) -> None:
        """The server refused a call for its rate: widen the spacing for a while, after a pause."""
        now = self._clock()
        self._widen_until = now + WIDEN_FOR_S
        self._next_start = max(self._next_start, now + self.interval * WIDEN_FACTOR)
