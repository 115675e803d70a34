"""load_history: Cloud Storage object finalized (Eventarc, or fake-gcs-server's Pub/Sub notification)."""

from typing import Any

import functions_framework

from progress_monitor import services
from progress_monitor.platform import logs
from progress_monitor.stages import load

logs.configure()

INSTANCE = services.PerInstance()  # this instance's clients, built by its first request


@functions_framework.cloud_event
def load_history(event: Any) -> None:
    """Load one shard into the BigQuery history, exactly once per business key."""
    load.handle_shard_event(event, INSTANCE.built())
