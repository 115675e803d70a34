"""Stage 1, extract_tags: the weekly schedule message -> the run recorded once, one task per active tag.

The same schedule topic also carries the daily health check (`{"health_check": true}`), which `health` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from progress_monitor import health, lanes, runs, runtime, warehouse
from progress_monitor.contracts import RUN_LABEL, PubSubMessage, RunId, monday_of, pubsub_message
from progress_monitor.errors import PermanentError
from progress_monitor.settings import Settings
from progress_monitor.stages.failures import guard

log = logging.getLogger("progress_monitor.schedule")
MAX_TAG_FILTER = 1000


@dataclass(frozen=True)
class RunPlan:
    """What a schedule message asks for: a run, and optionally only some of the active tags."""

    run_id: RunId
    tag_ids: frozenset[int] | None = None


@dataclass(frozen=True)
class FanOut:
    """What extract_tags did: the run, how many tag tasks it published, and whether it was a duplicate."""

    run_id: RunId
    tags: int
    duplicate: bool


def plan_run(cfg: Settings, message: PubSubMessage, now: datetime | None = None) -> RunPlan:
    """The run a schedule message asks for: the same scheduled slot always gives the same run id.

    The week is the one of the message's publish time in the school's time zone, unless the body carries
    `week` (any date of the wanted week, for a manual or local trigger). `rerun` (a label) gives a deliberate
    re-extraction its own run id (the history keeps one row per key); `tag_ids` limits the run to some tags.
    """
    body = message.json()
    now = now or datetime.now(UTC)
    week = body.get("week")
    if week is not None:
        try:
            moment = datetime.combine(date.fromisoformat(str(week)), datetime.min.time(), ZoneInfo(cfg.timezone))
        except ValueError as exc:
            raise PermanentError(f"schedule field 'week' is not a date: {str(week)[:20]!r}") from exc
    else:
        moment = message.publish_time or now
    snapshot = monday_of(moment, cfg.timezone)
    current = monday_of(now, cfg.timezone)
    if snapshot > current:
        raise PermanentError(f"schedule asks for week {snapshot}, which has not started yet")
    if snapshot < current and not cfg.cademi_is_simulator:
        # Cademi serves today's progress only: extracting now would file it under a past week. Rebuilding a
        # past week from its kept shards is `replay`.
        raise PermanentError(f"schedule asks for past week {snapshot}; Cademi serves only the current week")
    rerun = body.get("rerun")
    if rerun is not None and (not isinstance(rerun, str) or not RUN_LABEL.fullmatch(rerun)):
        raise PermanentError("schedule field 'rerun' must be a short lower-case label")
    only = body.get("tag_ids")
    if only is not None and (
        not isinstance(only, list)
        or len(only) > MAX_TAG_FILTER
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in only)
    ):
        raise PermanentError("schedule field 'tag_ids' must be a list of integers")
    return RunPlan(RunId(snapshot, rerun), frozenset(only) if only is not None else None)


def handle_schedule(event: Any) -> FanOut | None:
    """extract_tags: record the run, then publish one small message per active tag."""
    cfg = runtime.settings()
    return guard(cfg, "extract_tags", cfg.schedule_dlq_topic, event, lambda e: _dispatch(cfg, pubsub_message(e)))


def _dispatch(cfg: Settings, message: PubSubMessage) -> FanOut | None:
    if message.json().get("health_check") is True:
        health.daily_check(cfg)
        return None
    return fan_out(cfg, plan_run(cfg, message))


def fan_out(cfg: Settings, plan: RunPlan) -> FanOut:
    """Freeze the run's tags and record the run once, then start one tag per extraction lane (lanes.py);
    each lane passes itself on to the next tag. A duplicate delivery publishes nothing."""
    active = [t for t in warehouse.active_tags(cfg) if plan.tag_ids is None or t.tag_id in plan.tag_ids]
    bucket = runtime.shards_bucket(cfg)
    tags = lanes.write_manifest(bucket, plan.run_id, active)
    context = {"run_id": str(plan.run_id), "snapshot_date": plan.run_id.snapshot_date.isoformat()}
    if runs.start_run(cfg, plan.run_id, len(tags)):
        log.info("run already fanned out; duplicate schedule message ignored", extra=context)
        return FanOut(plan.run_id, len(tags), duplicate=True)
    for task in lanes.start(bucket, plan.run_id, tags, cfg.extraction_lanes):
        runtime.publish_task(cfg, task)
        lanes.mark_published(bucket, plan.run_id, task.tag_id)
    runs.mark_fanned_out(cfg, plan.run_id)
    log.info(
        "run started: %d tags in %d lanes",
        len(tags),
        min(len(tags), cfg.extraction_lanes),
        extra={**context, "count": len(tags)},
    )
    return FanOut(plan.run_id, len(tags), duplicate=False)
