"""A Services for tests without any Google client: what a test needs it passes in, anything else is None."""

from __future__ import annotations

from typing import Any

from progress_monitor.services import Services
from progress_monitor.settings import Settings


def offline_services(cfg: Settings, **given: Any) -> Services:
    """`given`: any of Services' fields (`shards`, `state`, `bigquery`, `cademi_budget`, `clock`, ...)."""
    clients: dict[str, Any] = dict.fromkeys(("bigquery", "storage", "shards", "state", "publisher", "cademi_budget"))
    return Services(cfg=cfg, **(clients | given))
