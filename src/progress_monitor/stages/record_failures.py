"""record_failures: every message that reaches a dead-letter topic is recorded in `failures` at once.

Two kinds arrive. A stage that met a permanent failure published the message here itself (failures.guard) and
already recorded and logged it: its `stage` and `reason` attributes say so, and it is acknowledged untouched (no
second row, no second alert, no extra write on the run). A message Pub/Sub gave up on after its delivery attempts
(a transient failure that never cleared) was recorded by no one: it gets its row now, with the attempts and its
attributes, and its run's status is recomputed, so run health shows it within a minute instead of at the next
daily health check.

The body is never parsed (it may be anything); only the envelope and the attributes (ids) are read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from progress_monitor.contracts.events import PubSubMessage, pubsub_message
from progress_monitor.contracts.values import RunId, parse_uint, strict
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline.failures import record_failure
from progress_monitor.services import Services
from progress_monitor.settings import Settings

log = logging.getLogger("progress_monitor.stages.record_failures")
SOURCE_TOPIC = strict(r"//pubsub\.googleapis\.com/projects/[a-z0-9-]{1,64}/topics/(?P<topic>[A-Za-z0-9._-]{1,255})")
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
# Attributes kept on the row: ours (ids only, contracts.messages) and Pub/Sub's dead-letter bookkeeping.
KEPT = ("run_id", "tag_id", "piece", "kind", "stage", DELIVERY_COUNT, SOURCE_SUBSCRIPTION)


@dataclass(frozen=True)
class DeadLetter:
    stage: str
    message_id: str
    attempts: int | None


def stage_of(cfg: Settings, topic: str) -> str | None:
    """The entry point whose dead-letter topic `topic` is."""
    return {
        cfg.schedule_dlq_topic: "extract_tags",
        cfg.progress_dlq_topic: "extract_progress",
        cfg.shards_dlq_topic: "load_history",
        cfg.slack_tasks_dlq_topic: "notify_tutors",
    }.get(topic)


def handle_dead_letter(event: Any, svc: Services) -> DeadLetter | None:
    """Record one dead-lettered message; an envelope that cannot be read is logged at ERROR and acknowledged
    (there is nothing to record it by). A BigQuery failure raises, so Pub/Sub delivers it again."""
    source = event.get("source") if hasattr(event, "get") else None
    match = SOURCE_TOPIC.fullmatch(source) if isinstance(source, str) else None
    stage = stage_of(svc.cfg, match["topic"]) if match else None
    try:
        message = pubsub_message(event)
    except PermanentError as exc:
        log.error("unreadable message on a dead-letter topic; not recorded: %s", exc, extra={"reason": str(exc)})
        return None
    return record(svc, stage or "unknown", message)


def record(svc: Services, stage: str, message: PubSubMessage) -> DeadLetter:
    attributes = message.attributes
    kept = {k: attributes[k][:100] for k in KEPT if k in attributes}
    run_id = RunId.parse_or_none(attributes.get("run_id"))
    if "stage" in attributes and "reason" in attributes and DELIVERY_COUNT not in attributes:
        # failures.guard's own: the stage recorded it (and logged it) before publishing it here.
        return DeadLetter(attributes["stage"][:40], attributes.get("original_message_id", "")[:100], None)
    message_id = message.message_id[:100]
    attempts = parse_uint(attributes.get(DELIVERY_COUNT), 4)
    subscription = attributes.get(SOURCE_SUBSCRIPTION, "?")[:200]
    reason = (
        f"Pub/Sub gave up after {attempts if attempts is not None else 'its'} delivery attempts "
        f"(subscription {subscription}); the last error is in the {stage} function's log"
    )
    record_failure(
        svc,
        stage,
        reason,
        run_id=run_id,
        tag_id=parse_uint(attributes.get("tag_id")),
        piece=parse_uint(attributes.get("piece")),
        message_id=message_id or None,
        attempts=attempts,
        attributes=json.dumps(kept, sort_keys=True),
    )
    log.error(
        "message dead-lettered in %s recorded: %s",
        stage,
        reason,
        extra={"run_id": str(run_id or ""), "event_id": message_id, "reason": reason},
    )
    return DeadLetter(stage, message_id, attempts)
