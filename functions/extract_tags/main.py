"""extract_tags: fired weekly by Cloud Scheduler through Pub/Sub; fans out one message per active tag.

The same topic carries the daily health check (resume stalled runs, alert on stale data).
"""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages import schedule

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.cloud_event
def extract_tags(event: Any) -> None:
    """Start the week's run (idempotent per scheduled slot), or run the daily health check."""
    schedule.handle_schedule(event, INSTANCE.built())
