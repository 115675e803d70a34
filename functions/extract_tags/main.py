"""extract_tags: fired weekly by Cloud Scheduler through Pub/Sub; fans out one message per active tag."""

from typing import Any

import functions_framework

from progress_monitor import logs, pipeline

logs.configure()


@functions_framework.cloud_event
def extract_tags(event: Any) -> None:
    """Start the week's run (idempotent per scheduled slot)."""
    pipeline.handle_schedule(event)
