"""extract_tags: fired weekly by Cloud Scheduler through Pub/Sub; fans out one message per active tag.

The same topic carries the daily health check (resume stalled runs, alert on stale data).
"""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages import schedule

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
def extract_tags(event: Any) -> None:
    """Start the week's run (idempotent per scheduled slot), or run the daily health check."""
    schedule.handle_schedule(event, _services())
