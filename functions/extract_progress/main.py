"""extract_progress: one Pub/Sub message per tag or continuation piece; writes one shard per piece."""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages import extract

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.cloud_event
def extract_progress(event: Any) -> None:
    """Extract one piece of a tag within the time budget."""
    extract.handle_progress_task(event, INSTANCE.built())
