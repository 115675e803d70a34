"""record_failures: every dead-letter topic pushes here; each message is recorded in `failures` at once."""

from typing import Any

import functions_framework

from progress_monitor import dead_letters, logs

logs.configure()


@functions_framework.cloud_event
def record_failures(event: Any) -> None:
    """Record one dead-lettered message (its stage, run, tag, attempts and why)."""
    dead_letters.handle_dead_letter(event)
