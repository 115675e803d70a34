"""The simulator's mutable state, shared by its handler threads: the scenario and its current week, the rate
limit's sliding windows, latency, the faults still to fire, and the request counters."""

from __future__ import annotations

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
        self._second: deque[float] = deque()
        self._minute: deque[float] = deque()
        self.faults: list[dict[str, Any]] = [dict(f) for f in scenario.raw.get("faults", [])]
        self.fault_left: list[int] = [int(f.get("times", 1)) for f in self.faults]
        quirks = scenario.raw.get("quirks", {})
        self.per_page = int(quirks.get("per_page", PER_PAGE))
        self.quirk_tags = {
            k: set(quirks.get(k, [])) for k in ("empty_last_page", "repeat_cursor", "overlap_pages", "endless_cursor")
        }

    def admit(self, now: float) -> float | None:
        """Record an arrival; return None if within the limit, else seconds until a slot frees."""
        limit = self.scenario.rate_limit
        wall = time.time()
        with self.lock:
            self.first_at = self.first_at or wall
            self.last_at = wall
            while self._second and now - self._second[0] >= 1.0:
                self._second.popleft()
            while self._minute and now - self._minute[0] >= 60.0:
                self._minute.popleft()
            if len(self._second) >= float(limit["per_second"]):
                return 1.0 - (now - self._second[0])
            if len(self._minute) >= float(limit["per_minute"]):
                return 60.0 - (now - self._minute[0])
            self._second.append(now)
            self._minute.append(now)
            return None

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
