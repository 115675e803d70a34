"""extract_progress: one Pub/Sub message per tag or continuation piece; writes one shard per piece."""

from typing import Any

import functions_framework

from progress_monitor import logs, pipeline

logs.configure()


@functions_framework.cloud_event
def extract_progress(event: Any) -> None:
    """Extract one piece of a tag within the time budget."""
    pipeline.handle_progress_task(event)
