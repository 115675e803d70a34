"""The process's settings and clients, each created once per instance and shared by every request.

Functions call `settings()` and the client getters; tests that change the environment or restart an emulator
call `reset()`. Each getter is cached per settings value (Settings is frozen and hashable) behind one lock: two
first requests at once must share one client, above all one Cademi budget.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery as bq
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud import storage as gcs  # type: ignore[attr-defined]

from progress_monitor.cademi.budget import FleetBudget
from progress_monitor.cademi.clients import make_client
from progress_monitor.cademi.ratelimit import CallBudget, RateLimiter
from progress_monitor.contracts.cademi import CademiSource
from progress_monitor.contracts.messages import Message
from progress_monitor.errors import SecretUnavailableError, SlackUnavailableError
from progress_monitor.platform.access import needs
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.settings import CADEMI_API_KEY, SLACK_BOT_TOKEN, Settings
from progress_monitor.slack.web import SlackClient

T = TypeVar("T")
_lock = threading.RLock()  # re-entrant: the Cademi client's getter asks for the budget's
_getters: list[Any] = []


def _once(create: Callable[..., T]) -> Callable[..., T]:
    """`functools.cache` under the module's lock: functools alone may run `create` twice for two first calls."""
    cached = functools.cache(create)
    _getters.append(cached)

    @functools.wraps(create)
    def get(*args: Any) -> T:
        with _lock:
            return cached(*args)

    return get


@_once
def settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings.from_env()


@_once
def cademi_budget(cfg: Settings) -> CallBudget:
    """The school-wide Cademi budget as this process takes part in it (budget.py)."""
    if cfg.cademi_fleet_budget == "gcs":
        return FleetBudget(shards_bucket(cfg), cfg.cademi_interval_s, cfg.cademi_late_tolerance_s)
    return RateLimiter(cfg.cademi_rate_per_second, cfg.cademi_rate_per_minute, cfg.cademi_rate_safety)


@_once
def cademi_client(cfg: Settings) -> CademiSource:
    """One Cademi client (one HTTP session) per process, within the school's budget; v1 or v3 as configured.
    An unreadable API key raises SecretUnavailableError and is read again by the next call."""
    return make_client(cfg, get_secret(cfg, CADEMI_API_KEY), cademi_budget(cfg))


@_once
def slack(cfg: Settings) -> SlackClient:
    """The Slack bot's Web API client. It asks `_slack_token` for the token at every call (Secret Manager's
    value, cached by secrets.py) and again, fresh, when Slack refuses it, so a renewed token is used at once;
    an unreadable token is a retry, never a cached failure."""
    return SlackClient(cfg.slack_api_url, functools.partial(_slack_token, cfg), cfg.slack_timeout_s)


def _slack_token(cfg: Settings, fresh: bool) -> str:
    try:
        return get_secret(cfg, SLACK_BOT_TOKEN, fresh=fresh)
    except SecretUnavailableError as exc:
        raise SlackUnavailableError(f"Slack bot token unavailable: {exc}") from exc


@needs("client")
@_once
def bigquery(cfg: Settings) -> bq.Client:
    """The BigQuery client (the emulator's REST endpoint when BIGQUERY_EMULATOR_HOST is set)."""
    if cfg.bigquery_emulator_host:
        return bq.Client(
            project=cfg.gcp_project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=cfg.bigquery_emulator_host),
        )
    return bq.Client(project=cfg.gcp_project)


@needs("client")
@_once
def storage(cfg: Settings) -> gcs.Client:
    """The Cloud Storage client (fake-gcs-server when STORAGE_EMULATOR_HOST is set, read by the library)."""
    credentials = AnonymousCredentials() if cfg.storage_emulator_host else None  # type: ignore[no-untyped-call]
    return gcs.Client(project=cfg.gcp_project, credentials=credentials)


@needs("client")
@_once
def _publisher() -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST is read by the library


def shards_bucket(cfg: Settings) -> gcs.Bucket:
    return storage(cfg).bucket(cfg.shards_bucket)


@needs("topic.publish {topic}")
def publish(cfg: Settings, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
    """Publish one message and wait for the server's id (raises on failure, so the caller is retried)."""
    client = _publisher()
    future = client.publish(client.topic_path(cfg.gcp_project, topic), data, **(attributes or {}))
    message_id: str = future.result(timeout=60)
    return message_id


@needs("topic.publish {message}")
def send(cfg: Settings, message: Message) -> str:
    """Publish one contract message (contracts.messages) on its own topic."""
    topic: str = getattr(cfg, message.TOPIC)
    return publish(cfg, topic, message.encode(), message.attributes())


def reset() -> None:
    """Forget cached settings and clients (tests that change the environment or restart an emulator)."""
    with _lock:
        for cached in _getters:
            cached.cache_clear()
