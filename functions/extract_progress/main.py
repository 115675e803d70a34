"""extract_progress: one Pub/Sub message per tag or continuation piece; writes one shard per piece."""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages import extract

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
def extract_progress(event: Any) -> None:
    """Extract one piece of a tag within the time budget."""
    extract.handle_progress_task(event, _services())
