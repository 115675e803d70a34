"""notify_tutors: the Slack tasks topic's worker (digest after a run, a tutor's click, a class list request).

Failures follow the stages' policy (failures.py): Slack or BigQuery unavailable raise and Pub/Sub
redelivers with backoff; a task that can never succeed is dead-lettered with its reason.
"""

from __future__ import annotations

import logging
from typing import Any

from progress_monitor.contracts.events import pubsub_message
from progress_monitor.contracts.messages import ClickTask, DigestTask, parse_slack_task
from progress_monitor.errors import PermanentError, SlackRefusedError
from progress_monitor.pipeline.failures import guard
from progress_monitor.services import Services
from progress_monitor.tutors import actions, digest

log = logging.getLogger("progress_monitor.tutors")


def handle_slack_task(event: Any, svc: Services) -> Any:
    return guard(svc, "notify_tutors", svc.cfg.slack_tasks_dlq_topic, event, lambda e: run_task(svc, e))


def run_task(svc: Services, event: Any) -> Any:
    task = parse_slack_task(pubsub_message(event).json())
    try:
        if isinstance(task, DigestTask):
            return digest.post_run_digests(svc, task.run_id)
        if isinstance(task, ClickTask):
            return actions.record_click(svc, task)
        return actions.answer_list(svc, task)
    except SlackRefusedError as exc:
        raise PermanentError(f"Slack refused the {task.KIND} task: {exc.code}") from exc
