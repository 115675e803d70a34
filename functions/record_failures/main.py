"""record_failures: every dead-letter topic pushes here; each message is recorded in `failures` at once."""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages.record_failures import handle_dead_letter

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.cloud_event
def record_failures(event: Any) -> None:
    """Record one dead-lettered message (its stage, run, tag, attempts and why)."""
    handle_dead_letter(event, INSTANCE.built())
