"""The simulator's mutable state, shared by its handler threads: the scenario and its current week, the rate
limit's sliding windows, latency, the faults still to fire, and the request counters."""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from collections import Counter, deque
from typing import Any

from cademi_sim.scenario import Scenario

PER_PAGE = 150


class SimState:
    """Mutable simulator state shared by handler threads."""

    def __init__(self, scenario: Scenario, admin_token: str, week: int = 0, seed: int = 0) -> None:
        self.scenario = scenario
        self.admin_token = admin_token
        self.week = week
        self.lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.rng = random.Random(seed)
        self.first_at: float | None = None  # wall-clock time of the first and last API request since reset
        self.last_at: float | None = None
        # Every API request since reset: (arrival, wall clock; path; admitted; how long the handler took to reach it)
        self.arrivals: list[tuple[float, str, bool, float]] = []
        self._admitted: deque[float] = deque()  # admitted arrivals' times (monotonic), in time order
        self.faults: list[dict[str, Any]] = [dict(f) for f in scenario.raw.get("faults", [])]
        self.fault_left: list[int] = [int(f.get("times", 1)) for f in self.faults]
        quirks = scenario.raw.get("quirks", {})
        self.per_page = int(quirks.get("per_page", PER_PAGE))
        self.quirk_tags = {
            k: set(quirks.get(k, [])) for k in ("empty_last_page", "repeat_cursor", "overlap_pages", "endless_cursor")
        }

    def admit(self, now: float, path: str = "", taken_up_after_s: float = 0.0) -> float | None:
        """Record an arrival (`now`: monotonic, when the request reached this host); return None if within the
        limit, else seconds until a slot frees. `taken_up_after_s`: how long the handler took to get to it.

        The windows are judged on arrival times whatever order the handler threads come in: the arrival is
        refused when, with it, some window of one second (or one minute) would hold more admitted arrivals
        than the limit allows."""
        limit = self.scenario.rate_limit
        wall = time.time()
        arrived_at = wall - (time.monotonic() - now)  # the wall-clock time of `now` (the server's arrival)
        with self.lock:
            self.first_at = self.first_at or wall
            self.last_at = wall
            while self._admitted and self._admitted[-1] - self._admitted[0] > 120.0:
                self._admitted.popleft()  # long out of every window (arrivals come out of order by far less)
            wait = _over(self._admitted, now, 1.0, math.ceil(float(limit["per_second"])))
            if wait is None:
                wait = _over(self._admitted, now, 60.0, math.ceil(float(limit["per_minute"])))
            if wait is None:
                bisect.insort(self._admitted, now)
            self.arrivals.append((arrived_at, path, wait is None, taken_up_after_s))
            return wait

    def latency_s(self) -> float:
        latency = self.scenario.raw.get("latency_ms", 0)
        if isinstance(latency, dict):
            mean, jitter = float(latency["mean"]), float(latency.get("jitter", 0))
            with self.lock:
                value = mean + self.rng.uniform(-jitter, jitter)
        else:
            value = float(latency)
        return max(0.0, value) / 1000.0

    def take_fault(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if self.fault_left[i] <= 0:
                    continue
                if "week" in fault and fault["week"] != self.week:
                    continue
                if "path" in fault and fault["path"] != path:
                    continue
                if "path_prefix" in fault and not path.startswith(fault["path_prefix"]):
                    continue
                self.fault_left[i] -= 1
                self.counters["faults_fired"] += 1
                return fault
        return None

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1


def _over(admitted: deque[float], now: float, window: float, limit: int) -> float | None:
    """Seconds until an arrival at `now` fits, if with it `limit + 1` admitted arrivals would lie within less
    than `window` of each other (a sliding window of `window` seconds holding more than `limit`); else None."""
    times = list(admitted)
    at = bisect.bisect_right(times, now)
    times.insert(at, now)
    for first in range(max(0, at - limit), min(at, len(times) - limit - 1) + 1):
        if times[first + limit] - times[first] < window:
            return max(0.0, times[first] + window - now)
    return None
