"""Google Cloud clients, created lazily once per process and reused (emulators when configured)."""

from __future__ import annotations

import threading
from typing import Any

from progress_monitor.settings import Settings

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def bigquery(settings: Settings) -> Any:
    """The BigQuery client (the emulator's REST endpoint when BIGQUERY_EMULATOR_HOST is set)."""
    with _lock:
        if "bigquery" not in _clients:
            from google.api_core.client_options import ClientOptions
            from google.cloud import bigquery as bq

            if settings.bigquery_emulator_host:
                _clients["bigquery"] = bq.Client(
                    project=settings.gcp_project,
                    credentials=_anonymous(),
                    client_options=ClientOptions(api_endpoint=settings.bigquery_emulator_host),
                )
            else:
                _clients["bigquery"] = bq.Client(project=settings.gcp_project)
        return _clients["bigquery"]


def storage(settings: Settings) -> Any:
    """The Cloud Storage client (fake-gcs-server when STORAGE_EMULATOR_HOST is set)."""
    with _lock:
        if "storage" not in _clients:
            from google.cloud import storage as gcs  # type: ignore[attr-defined]

            credentials = _anonymous() if settings.storage_emulator_host else None
            _clients["storage"] = gcs.Client(project=settings.gcp_project, credentials=credentials)
        return _clients["storage"]


def publisher(settings: Settings) -> Any:
    """The Pub/Sub publisher (the emulator when PUBSUB_EMULATOR_HOST is set, read by the library)."""
    with _lock:
        if "publisher" not in _clients:
            from google.cloud import pubsub_v1  # type: ignore[attr-defined]

            _clients["publisher"] = pubsub_v1.PublisherClient()
        return _clients["publisher"]


def publish(settings: Settings, topic: str, data: bytes, **attributes: str) -> str:
    """Publish one message and wait for the server's id (raises on failure, so the caller is retried)."""
    client = publisher(settings)
    future = client.publish(client.topic_path(settings.gcp_project, topic), data, **attributes)
    message_id: str = future.result(timeout=60)
    return message_id


def reset() -> None:
    """Forget cached clients (tests that restart an emulator)."""
    with _lock:
        _clients.clear()
