"""add_tag: the staff web form (behind Google identity) and the Slack slash command (signature only).

Two entry points of the same code, deployed as two functions: `add_tag` and `slack_command`.
"""

import functools
import threading
from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.add_tag import command, form
from progress_monitor.platform import logs

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


@functions_framework.http
def add_tag(request: Any) -> Any:
    """The web form: GET shows it, POST registers or deactivates a class."""
    return form.handle_form(request, _services())


@functions_framework.http
def slack_command(request: Any) -> Any:
    """`/turma adicionar|listar|desativar|ajuda` from Slack."""
    return command.handle_slack(request, _services())
