"""For tests without any Google client: a Services holding only what a test passes in, and a clock it moves."""

from __future__ import annotations

import threading
from typing import Any

from progress_monitor.services import Services
from progress_monitor.settings import Settings


def offline_services(cfg: Settings, **given: Any) -> Services:
    """`given`: any of Services' fields (`shards`, `state`, `bigquery`, `cademi_budget`, `clock`, ...)."""
    clients: dict[str, Any] = dict.fromkeys(("bigquery", "storage", "shards", "state", "publisher", "cademi_budget"))
    return Services(cfg=cfg, **(clients | given))


class ManualClock:
    """The test's time: moves when someone sleeps or the test says time passed, never by itself (`time` and
    `sleep` stand for time.monotonic and time.sleep)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.lock = threading.Lock()

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(0.0, seconds)
