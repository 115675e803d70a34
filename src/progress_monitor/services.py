"""The process's settings and clients, built once per instance and passed down to every stage.

`build(cfg)` creates each client once. A function's adapter (functions/<fn>/main.py) holds a `PerInstance`,
which builds one Services on its instance's first request, and passes it to the stage; an operator command
builds its own. Nothing else calls `build`: stages and features take the Services (or the one client) they use
as an argument, so a test hands in its own and can pin the clock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery as bq
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud import storage as gcs  # type: ignore[attr-defined]

from progress_monitor.cademi.budget import FleetBudget
from progress_monitor.cademi.clients import make_client
from progress_monitor.cademi.ratelimit import CallBudget, RateLimiter, late_tolerance
from progress_monitor.contracts.cademi import CademiSource
from progress_monitor.contracts.messages import Message
from progress_monitor.contracts.objects import STATE, bucket_of
from progress_monitor.errors import SecretUnavailableError, SlackUnavailableError
from progress_monitor.platform.access import needs
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.settings import CADEMI_API_KEY, SLACK_BOT_TOKEN, Settings
from progress_monitor.slack.web import SlackClient

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Once(Generic[T]):
    """A value made by the first call that succeeds, under a lock: two first requests at once share one; a
    failure (an unreadable secret) is not kept, so the next call tries again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: T | None = None

    def get_or_make(self, make: Callable[[], T]) -> T:
        with self._lock:
            if self._value is None:
                self._value = make()
            return self._value


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity (a per-instance cache key)
class Services:
    """What the stages use: the settings, the Google clients, the Cademi budget and client, Slack, the clock."""

    cfg: Settings
    bigquery: bq.Client
    storage: gcs.Client
    shards: gcs.Bucket  # the shards bucket's handle: progress shards and contacts files, what load_history loads
    state: gcs.Bucket  # the state bucket's: every other object (contracts.objects.bucket_of)
    publisher: pubsub_v1.PublisherClient
    cademi_budget: CallBudget  # the school-wide Cademi budget as this process takes part in it (budget.py)
    clock: Callable[[], datetime] = utc_now  # aware UTC; tests pin it (dataclasses.replace)
    _cademi: _Once[CademiSource] = field(default_factory=_Once, repr=False)
    _slack: _Once[SlackClient] = field(default_factory=_Once, repr=False)

    def bucket_for(self, name: str) -> gcs.Bucket:
        """The bucket that holds objects named `name` (a name or a prefix of names: contracts.objects.bucket_of)."""
        return self.state if bucket_of(name) == STATE else self.shards

    def now(self) -> datetime:
        """The current time, aware UTC: what business decisions (which week, what is stale) are taken at."""
        return self.clock()

    def cademi(self) -> CademiSource:
        """One Cademi client (one HTTP session) per process, within the school's budget; v1 or v3 as configured.
        An unreadable API key raises SecretUnavailableError and is read again by the next call."""
        return self._cademi.get_or_make(
            lambda: make_client(self.cfg, get_secret(self.cfg, CADEMI_API_KEY), self.cademi_budget)
        )

    def slack(self) -> SlackClient:
        """The Slack bot's Web API client. It asks `_slack_token` for the token at every call (Secret Manager's
        value, cached by secret_store.py) and again, fresh, when Slack refuses it, so a renewed token is used
        at once; an unreadable token is a retry, never a cached failure."""
        cfg = self.cfg
        return self._slack.get_or_make(
            lambda: SlackClient(cfg.slack_api_url, functools.partial(_slack_token, cfg), cfg.slack_timeout_s)
        )

    @needs("topic.publish {topic}")
    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish one message and wait for the server's id (raises on failure, so the caller is retried)."""
        client = self.publisher
        future = client.publish(client.topic_path(self.cfg.gcp_project, topic), data, **(attributes or {}))
        message_id: str = future.result(timeout=60)
        return message_id

    @needs("topic.publish {message}")
    def send(self, message: Message) -> str:
        """Publish one contract message (contracts.messages) on its own topic."""
        topic: str = getattr(self.cfg, message.TOPIC)
        return self.publish(topic, message.encode(), message.attributes())


def _slack_token(cfg: Settings, fresh: bool) -> str:
    try:
        return get_secret(cfg, SLACK_BOT_TOKEN, fresh=fresh)
    except SecretUnavailableError as exc:
        raise SlackUnavailableError(f"Slack bot token unavailable: {exc}") from exc


class PerInstance:
    """The Services of one function instance, held by its adapter (functions/<fn>/main.py): built by the first
    request and shared by the next. The lock: two first requests at once must share one, above all one Cademi
    budget. A module loaded again (a test's `create_app`) holds a new one, so it reads the environment afresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: Services | None = None

    def built(self) -> Services:
        with self._lock:
            if self._services is None:
                self._services = build()
            return self._services


def build(cfg: Settings | None = None) -> Services:
    """Every client, created once (the settings read from the environment when not given). Only `PerInstance`
    (once per instance, for the adapters) and the operator commands call this."""
    cfg = Settings.from_env() if cfg is None else cfg
    storage = _storage(cfg)
    shards, state = storage.bucket(cfg.shards_bucket), storage.bucket(cfg.state_bucket)
    budget: CallBudget
    if cfg.cademi_fleet_budget == "gcs":  # in the state bucket: load_history is not triggered by its rewrites
        tolerance = late_tolerance(cfg.cademi_rate_per_second, cfg.cademi_rate_per_minute, cfg.cademi_interval_s)
        budget = FleetBudget(state, cfg.cademi_interval_s, tolerance)
    else:
        budget = RateLimiter(cfg.cademi_rate_per_second, cfg.cademi_rate_per_minute, cfg.cademi_rate_safety)
    return Services(cfg, _bigquery(cfg), storage, shards, state, _publisher(), budget)


@needs("client")
def _bigquery(cfg: Settings) -> bq.Client:
    """The BigQuery client (the emulator's REST endpoint when BIGQUERY_EMULATOR_HOST is set)."""
    if cfg.bigquery_emulator_host:
        return bq.Client(
            project=cfg.gcp_project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=cfg.bigquery_emulator_host),
        )
    return bq.Client(project=cfg.gcp_project)


@needs("client")
def _storage(cfg: Settings) -> gcs.Client:
    """The Cloud Storage client (fake-gcs-server when STORAGE_EMULATOR_HOST is set, read by the library)."""
    credentials = AnonymousCredentials() if cfg.storage_emulator_host else None  # type: ignore[no-untyped-call]
    return gcs.Client(project=cfg.gcp_project, credentials=credentials)


@needs("client")
def _publisher() -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient()  # PUBSUB_EMULATOR_HOST is read by the library
