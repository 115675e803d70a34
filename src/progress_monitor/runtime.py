"""The process's settings and clients, each created once and shared by every request of the instance.

Functions call `settings()` and the client getters; tests that change the environment call `reset()`.
"""

from __future__ import annotations

import threading

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery as bq
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud import storage as gcs  # type: ignore[attr-defined]

from progress_monitor.budget import FleetBudget
from progress_monitor.cademi import CademiClient, CademiSource
from progress_monitor.cademi_v3 import CademiV3Client
from progress_monitor.contracts import ProgressTask
from progress_monitor.ratelimit import CallBudget, RateLimiter
from progress_monitor.secrets import SecretUnavailableError, get_secret
from progress_monitor.settings import CADEMI_API_KEY, SLACK_BOT_TOKEN, Settings
from progress_monitor.slack_api import SlackClient, SlackUnavailableError

_lock = threading.Lock()
_settings: Settings | None = None
_cademi: CademiSource | None = None
_budget: CallBudget | None = None
_bigquery: bq.Client | None = None
_storage: gcs.Client | None = None
_publisher: pubsub_v1.PublisherClient | None = None
_slack: SlackClient | None = None


def settings() -> Settings:
    """The process's settings, read once from the environment."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = Settings.from_env()
        return _settings


def cademi_budget(cfg: Settings) -> CallBudget:
    """The school-wide Cademi budget as this process takes part in it (budget.py), created once."""
    global _budget
    with _lock:
        if _budget is None:
            if cfg.cademi_fleet_budget == "gcs":
                bucket = _storage_client(cfg).bucket(cfg.shards_bucket)
                _budget = FleetBudget(bucket, cfg.cademi_interval_s, cfg.cademi_late_tolerance_s)
            else:
                _budget = RateLimiter(cfg.cademi_rate_per_second, cfg.cademi_rate_per_minute, cfg.cademi_rate_safety)
        return _budget


def cademi_client(cfg: Settings) -> CademiSource:
    """One Cademi client (one HTTP session) per process, shared by every request, within the school's budget;
    v1 or v3 as CADEMI_API_VERSION says."""
    global _cademi
    budget = cademi_budget(cfg)
    with _lock:
        if _cademi is None:
            source = CademiV3Client if cfg.cademi_api_version == "v3" else CademiClient
            _cademi = source.from_settings(cfg, get_secret(cfg, CADEMI_API_KEY), budget)
        return _cademi


def slack(cfg: Settings) -> SlackClient:
    """The Slack bot's Web API client, created once; an unreadable token is a retry, never a cached failure."""
    global _slack
    with _lock:
        if _slack is None:
            try:
                token = get_secret(cfg, SLACK_BOT_TOKEN)
            except SecretUnavailableError as exc:
                raise SlackUnavailableError(f"Slack bot token unavailable: {exc}") from exc
            _slack = SlackClient(cfg.slack_api_url, token)
        return _slack


def bigquery(cfg: Settings) -> bq.Client:
    """The BigQuery client (the emulator's REST endpoint when BIGQUERY_EMULATOR_HOST is set)."""
    global _bigquery
    with _lock:
        if _bigquery is None:
            if cfg.bigquery_emulator_host:
                _bigquery = bq.Client(
                    project=cfg.gcp_project,
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options=ClientOptions(api_endpoint=cfg.bigquery_emulator_host),
                )
            else:
                _bigquery = bq.Client(project=cfg.gcp_project)
        return _bigquery


def storage(cfg: Settings) -> gcs.Client:
    """The Cloud Storage client (fake-gcs-server when STORAGE_EMULATOR_HOST is set, read by the library)."""
    with _lock:
        return _storage_client(cfg)


def _storage_client(cfg: Settings) -> gcs.Client:
    global _storage
    if _storage is None:
        credentials = AnonymousCredentials() if cfg.storage_emulator_host else None  # type: ignore[no-untyped-call]
        _storage = gcs.Client(project=cfg.gcp_project, credentials=credentials)
    return _storage


def shards_bucket(cfg: Settings) -> gcs.Bucket:
    return storage(cfg).bucket(cfg.shards_bucket)


def publish(cfg: Settings, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
    """Publish one message and wait for the server's id (raises on failure, so the caller is retried)."""
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST is read by the library
        client = _publisher
    future = client.publish(client.topic_path(cfg.gcp_project, topic), data, **(attributes or {}))
    message_id: str = future.result(timeout=60)
    return message_id


def publish_task(cfg: Settings, task: ProgressTask) -> None:
    """Publish one progress task (a tag's piece 0, or a continuation) on the progress topic."""
    publish(cfg, cfg.progress_topic, task.encode(), task.attributes())


def reset() -> None:
    """Forget cached settings and clients (tests that change the environment or restart an emulator)."""
    global _settings, _cademi, _budget, _bigquery, _storage, _publisher, _slack
    with _lock:
        _settings = _cademi = _budget = _bigquery = _storage = _publisher = _slack = None
