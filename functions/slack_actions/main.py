"""slack_actions: Slack's interactivity URL, the buttons under the tutors' digest (signature only)."""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.tutors import actions

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.http
def slack_actions(request: Any) -> Any:
    """A tutor clicked "Contatado" or "Sem resposta" under a digest: verified, acknowledged, handed to the worker."""
    return actions.handle_interaction(request, INSTANCE.built())
