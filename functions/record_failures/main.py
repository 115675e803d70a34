"""record_failures: every dead-letter topic pushes here; each message is recorded in `failures` at once."""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages.record_failures import handle_dead_letter

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
def record_failures(event: Any) -> None:
    """Record one dead-lettered message (its stage, run, tag, attempts and why)."""
    handle_dead_letter(event, _services())
