"""A thread-safe rate limiter of one process, and the interface every Cademi budget offers the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WIDEN_FACTOR = 1.5
WIDEN_FOR_S = 120.0


@dataclass(frozen=True)
class Slot:
    """The right to start one call at `at` (the budget's clock), still good until `at + tolerance`.

    The budget checks it when it hands it out; the client checks it again just before writing the request
    (`ontime.py`), since what Cademi judges is when the request arrives."""

    at: float
    tolerance: float
    clock: Callable[[], float]

    def missed(self) -> bool:
        """Too late to start the call: written now, it could arrive too close to the next slot's call."""
        return self.clock() - self.at > self.tolerance


def late_tolerance(per_second: float, per_minute: float, interval: float) -> float:
    """How late a slot may still be used: half the slack the spacing `interval` leaves in the tighter of Cademi's
    two windows (15 ms at 2 req/s and 120 req/min with a 3 % margin, whatever the rate). A window's slack: how much
    longer than the window one call more than it allows takes, at that spacing. The other half is for the way to
    the server: a request's delay from its write to Cademi's arrival stamp may differ from another's by that much
    without a breach."""
    second = max(1.0, per_second) * interval - 1.0
    minute = per_minute * interval - 60.0
    return max(0.0, min(second, minute) / 2)


class CallBudget(Protocol):
    """What the Cademi client needs of a budget: wait for the right to start a call; hear of a breach."""

    @property
    def rate(self) -> float: ...

    def acquire(self) -> Slot: ...

    def breached(self) -> None: ...


class RateLimiter:
    """Spaces call starts evenly: at most `per_second` in any second and `per_minute` in any minute, within one
    process (the school-wide budget across processes is budget.FleetBudget).

    Callers pass one at a time through a gate, and the next start is counted from the moment the previous
    caller actually left it: a thread that wakes up late pushes the next start later instead of letting it
    crowd in. `safety` widens the spacing so network jitter cannot squeeze two arrivals closer than the
    server tolerates (half of it is the slot's `late_tolerance_s`, checked again at the write by `ontime.py`);
    after a breach the spacing widens for a while.
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
        self.late_tolerance_s = late_tolerance(per_second, per_minute, self.interval)
        self._clock = clock
        self._sleep = sleep
        self._gate = threading.Lock()
        self._next_start = float("-inf")
        self._widen_until = float("-inf")

    @property
    def rate(self) -> float:
        """Calls per second this limiter admits at most."""
        return 1.0 / self.interval

    def acquire(self) -> Slot:
        """Block until this caller may start one call; the slot is good from now for `late_tolerance_s`."""
        with self._gate:
            wait = self._next_start - self._clock()
            if wait > 0:
                self._sleep(wait)
            started = self._clock()
            widened = started < self._widen_until
            self._next_start = started + self.interval * (WIDEN_FACTOR if widened else 1.0)
        return Slot(started, self.late_tolerance_s, self._clock)

    def breached(self) -> None:
        """The server refused a call for its rate: widen the spacing for a while, after a pause."""
        now = self._clock()
        self._widen_until = now + WIDEN_FOR_S
        self._next_start = max(self._next_start, now + self.interval * WIDEN_FACTOR)
