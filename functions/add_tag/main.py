"""add_tag: the staff web form (behind Google identity) and the Slack slash command (signature only).

Two entry points of the same code, deployed as two functions: `add_tag` and `slack_command`.
"""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.add_tag import command, form
from progress_monitor.platform import logs

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.http
def add_tag(request: Any) -> Any:
    """The web form: GET shows it, POST registers or deactivates a class."""
    return form.handle_form(request, INSTANCE.built())


@functions_framework.http
def slack_command(request: Any) -> Any:
    """`/turma adicionar|listar|desativar|ajuda` from Slack."""
    return command.handle_slack(request, INSTANCE.built())
