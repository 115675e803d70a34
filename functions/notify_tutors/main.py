"""notify_tutors: the Slack tasks topic -> the tutors' digests, their buttons' clicks, `/turma alunos` answers."""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.tutors import worker

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
def notify_tutors(event: Any) -> None:
    """Post or update a week's digests, record a tutor's click, or answer a class list request."""
    worker.handle_slack_task(event, _services())
