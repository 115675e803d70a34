"""What the local stack deploys and how it is wired, as Terraform declares it in the cloud: the pipeline
functions with their trigger and dead-letter topics, ack deadlines, delivery attempts and Cloud Run capacity,
the HTTP functions, and the fixed local identities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT = "local-project"
SCHEDULE_TOPIC = "weekly-schedule"
SHARD_EVENTS_TOPIC = "shard-events"
SHARD_RELOADS_TOPIC = "shard-reloads"  # the health check re-sends lost load events here (as in the cloud)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class EventFunction:
    """A pipeline function as deployed: its trigger topic, dead-letter topic, ack deadline, delivery attempts,
    and its Cloud Run capacity (instances x concurrency), which the local front enforces."""

    topic: str
    dlq: str
    ack_deadline_s: int
    max_delivery_attempts: int
    instances: int
    concurrency: int


# extract_tags and load_history are deployed as up to 3 instances of concurrency 1: locally one process of 3
# threads behind a front admitting 3 gives the same capacity with fewer processes. extract_progress's
# instances are real processes (LocalStack.start's progress_instances): the budget must hold across them.
FUNCTIONS = {
    "extract_tags": EventFunction(SCHEDULE_TOPIC, "weekly-schedule-dlq", 180, 5, 1, 3),
    "extract_progress": EventFunction("progress-tasks", "progress-tasks-dlq", 600, 5, 1, 4),
    # Eventarc retries a finalize event for 24 hours rather than dead-lettering it after 5 attempts: locally,
    # Pub/Sub's maximum number of attempts stands in for that.
    "load_history": EventFunction(SHARD_EVENTS_TOPIC, "shard-events-dlq", 300, 100, 1, 3),
    # The tutors' Slack worker: digests after a run, clicks, class lists (tutors/).
    "notify_tutors": EventFunction("slack-tasks", "slack-tasks-dlq", 60, 5, 1, 3),
}
# Every dead-letter topic pushes to record_failures (dead_letters.py), which records each message in `failures`.
RECORDER = "record_failures"
# HTTP functions: name -> (source folder, entry point), as Terraform's local.functions declares them.
HTTP_FUNCTIONS = {
    "add_tag": ("add_tag", "add_tag"),
    "slack_command": ("add_tag", "slack_command"),
    "slack_actions": ("slack_actions", "slack_actions"),
}
LOCAL_STAFF = "coordenacao@escola.local"
LOCAL_SLACK_TEAM, LOCAL_SLACK_USER = "TESCOLA01", "UCOORD01"  # the local Slack workspace and its one coordinator
# The service account every push subscription's `oidc_token` names (Terraform's google_service_account.pusher).
PUSHER = f"pubsub-push@{PROJECT}.iam.gserviceaccount.com"
SIM_ADMIN_TOKEN = "local-admin"  # noqa: S105 - guards the loopback-only simulator's admin endpoints
LOCAL_PRIVACY_KEY = "local-stack-privacy-key"  # a fixed key for the local stack: simulated students only


def function_source(folder: str) -> Path:
    """A function's deployed source: functions/<folder>/main.py."""
    return ROOT / "functions" / folder / "main.py"
