"""notify_tutors: the Slack tasks topic -> the tutors' digests, their buttons' clicks, `/turma alunos` answers."""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.tutors import worker

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.cloud_event
def notify_tutors(event: Any) -> None:
    """Post or update a week's digests, record a tutor's click, or answer a class list request."""
    worker.handle_slack_task(event, INSTANCE.built())
