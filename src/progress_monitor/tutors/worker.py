"""notify_tutors: the Slack tasks topic's worker (digest after a run, a tutor's click, a class list request).

Failures follow the stages' policy (failures.py): Slack or BigQuery unavailable raise and Pub/Sub
redelivers with backoff; a task that can never succeed is dead-lettered with its reason.
"""

from __future__ import annotations

import logging
from typing import Any

from progress_monitor import services
from progress_monitor.contracts.events import pubsub_message
from progress_monitor.contracts.messages import ClickTask, DigestTask, parse_slack_task
from progress_monitor.errors import PermanentError, SlackRefusedError
from progress_monitor.pipeline.failures import guard
from progress_monitor.settings import Settings
from progress_monitor.tutors import actions, digest

log = logging.getLogger("progress_monitor.tutors")


def handle_slack_task(event: Any) -> Any:
    cfg = services.settings()
    return guard(cfg, "notify_tutors", cfg.slack_tasks_dlq_topic, event, lambda e: run_task(cfg, e))


def run_task(cfg: Settings, event: Any) -> Any:
    task = parse_slack_task(pubsub_message(event).json())
    try:
        if isinstance(task, DigestTask):
            return digest.post_run_digests(cfg, task.run_id)
        if isinstance(task, ClickTask):
            return actions.record_click(cfg, task)
        return actions.answer_list(cfg, task)
    except SlackRefusedError as exc:
        raise PermanentError(f"Slack refused the {task.KIND} task: {exc.code}") from exc
