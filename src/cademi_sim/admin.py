"""Client for the simulator's admin endpoints (tests, local stack, benchmarks)."""

from __future__ import annotations

from typing import Any

import requests


class SimulatorAdmin:
    """Set the simulated week, read and reset counters, inject faults."""

    def __init__(self, port: int, token: str) -> None:
        self.root = f"http://127.0.0.1:{port}/_admin"
        self._session = requests.Session()
        self._session.headers["X-Admin-Token"] = token

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._session.request(method, self.root + path, json=body, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_week(self, week: int | str) -> dict[str, Any]:
        return self._call("POST", "/week", {"week": week})

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self._call("GET", "/counters")["counters"]
        return counters

    def window(self) -> dict[str, float | None]:
        """Wall-clock times of the first and last API request since the last reset."""
        window: dict[str, float | None] = self._call("GET", "/counters")["window"]
        return window

    def arrivals(self) -> list[dict[str, Any]]:
        """Every API request since the last reset, in arrival order: its wall-clock arrival time as the rate
        limit judged it (`at`), its path and whether it was admitted."""
        arrivals: list[dict[str, Any]] = self._call("GET", "/arrivals")["arrivals"]
        return arrivals

    def reset(self) -> None:
        self._call("POST", "/reset")

    def add_faults(self, faults: list[dict[str, Any]]) -> None:
        self._call("POST", "/faults", {"faults": faults})
