"""slack_actions: Slack's interactivity URL, the buttons under the tutors' digest (signature only)."""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.tutors import actions

logs.configure()

_lock = threading.Lock()


@functools.cache
def _built() -> services.Services:
    return services.build()


def _services() -> services.Services:
    """This instance's clients, built by its first request and shared by the next."""
    with _lock:
        return _built()


@functions_framework.http
def slack_actions(request: Any) -> Any:
    """A tutor clicked "Contatado" or "Sem resposta" under a digest: verified, acknowledged, handed to the worker."""
    return actions.handle_interaction(request, _services())
