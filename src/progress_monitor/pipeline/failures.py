"""Failures, in one place: the policy of every event entry point (the three stages and the tutors' worker) and
the `failures` table that run health reads.

A TransientError (or any unexpected exception) propagates, so Pub/Sub redelivers the event with backoff. A
PermanentError is logged with its reason, the message is published to the entry point's dead-letter topic and
recorded in the `failures` table, and the event is acknowledged. Which outside errors are which: errors.RULES.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from progress_monitor.contracts.events import PubSubMessage, event_as_message
from progress_monitor.contracts.values import RunId, parse_uint
from progress_monitor.errors import Kind, classify, pipeline_error
from progress_monitor.pipeline.runs import refresh_run
from progress_monitor.platform.warehouse import query
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.pipeline.failures")
T = TypeVar("T")
MAX_DEAD_LETTER_BYTES = 9 * 1024 * 1024  # under Pub/Sub's 10 MB message limit
KEPT_ATTRIBUTES = ("run_id", "tag_id", "piece")


def guard(svc: Services, stage: str, dlq_topic: str, event: Any, work: Callable[[Any], T]) -> T | None:
    """Run `work(event)`, decoding included. An error the table calls permanent (errors.RULES; a PermanentError
    above all) dead-letters the event, as far as it can be read, and returns None, so a malformed envelope is
    recorded once instead of failing five deliveries; any other error propagates and is redelivered."""
    try:
        return work(event)
    except Exception as exc:
        if classify(exc) is not Kind.PERMANENT:
            raise  # redelivered with backoff
        dead_letter(svc, stage, dlq_topic, event_as_message(event), str(pipeline_error(exc, stage)))
        return None


def dead_letter(svc: Services, stage: str, topic: str, message: PubSubMessage, reason: str) -> None:
    """Log the reason, keep the message on the dead-letter topic, and record it for run health."""
    attributes = message.attributes
    run_id = RunId.parse_or_none(attributes.get("run_id"))
    tag_id = parse_uint(attributes.get("tag_id"))
    log.error(
        "permanent failure in %s; message dead-lettered: %s",
        stage,
        reason,
        extra={"reason": reason, "event_id": message.message_id, "run_id": str(run_id or ""), "tag_id": tag_id},
    )
    kept = {k: v[:100] for k, v in attributes.items() if k in KEPT_ATTRIBUTES}
    svc.publish(
        topic,
        message.data[:MAX_DEAD_LETTER_BYTES],
        {"stage": stage, "reason": reason[:1000], "original_message_id": message.message_id, **kept},
    )
    record_failure(
        svc,
        stage,
        reason,
        run_id=run_id,
        tag_id=tag_id,
        piece=parse_uint(attributes.get("piece")),
        message_id=message.message_id or None,
    )


def record_failure(
    svc: Services,
    stage: str,
    reason: str,
    *,
    run_id: RunId | None = None,
    tag_id: int | None = None,
    piece: int | None = None,
    message_id: str | None = None,
    attempts: int | None = None,
    attributes: str | None = None,
) -> None:
    """Keep a failure where run health can see it (idempotent per message id and stage): a permanent one the
    stage dead-lettered itself, or a message Pub/Sub gave up on after `attempts` deliveries
    (stages/record_failures.py)."""
    query(
        svc,
        """MERGE `${failures}` T USING (SELECT @message_id AS message_id, @stage AS stage) S
           ON T.message_id = S.message_id AND T.stage = S.stage
           WHEN NOT MATCHED THEN INSERT (failed_at, stage, run_id, tag_id, piece, message_id, reason, attempts,
             attributes)
           VALUES (@now, @stage, @run_id, @tag_id, @piece, @message_id, @reason, NULLIF(@attempts, -1),
             NULLIF(@attributes, ''))""",
        now=svc.now(),
        stage=stage,
        run_id=str(run_id) if run_id else "",
        tag_id=tag_id if tag_id is not None else -1,
        piece=piece if piece is not None else -1,
        message_id=message_id or hashlib.sha256(reason.encode()).hexdigest()[:16],
        reason=reason[:500],
        attempts=attempts if attempts is not None else -1,
        attributes=attributes or "",
    )
    if run_id:
        refresh_run(svc, run_id)
