"""load_history: Cloud Storage object finalized (Eventarc, or fake-gcs-server's Pub/Sub notification)."""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages import load

logs.configure()

_lock = threading.Lock()


@functools.cache
def _built() -> services.Services:
    return services.build()


def _services() -> services.Services:
    """This instance's clients, built by its first request and shared by the next (the lock: two first requests
    at once must share one, above all one Cademi budget)."""
    with _lock:
        return _built()


@functions_framework.cloud_event
def load_history(event: Any) -> None:
    """Load one shard into the BigQuery history, exactly once per business key."""
    load.handle_shard_event(event, _services())
