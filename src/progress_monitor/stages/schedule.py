"""Stage 1, extract_tags: the weekly schedule message -> the run recorded once, one task per active tag.

The same schedule topic also carries the daily health check (`{"health_check": true}`), which `health` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from progress_monitor.contracts.events import PubSubMessage, pubsub_message
from progress_monitor.contracts.messages import ScheduleRequest
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline import lanes, runs
from progress_monitor.pipeline.failures import guard
from progress_monitor.platform import warehouse
from progress_monitor.services import Services
from progress_monitor.settings import Settings
from progress_monitor.stages import daily

log = logging.getLogger("progress_monitor.schedule")


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
    """The run a schedule message asks for (contracts.messages.ScheduleRequest): the same scheduled slot always
    gives the same run id; a week that has not started, or a past one against the real Cademi, is refused."""
    return _plan(cfg, ScheduleRequest.from_json(message.json()), message.publish_time, now)


def _plan(cfg: Settings, request: ScheduleRequest, published: datetime | None, now: datetime | None) -> RunPlan:
    now = now or datetime.now(UTC)
    run_id = request.run_id(cfg.timezone, published or now)
    if (refusal := runs.extraction_refusal(cfg, run_id.snapshot_date, now)) is not None:
        raise PermanentError(f"schedule refused: {refusal}")
    return RunPlan(run_id, request.tag_ids)


def handle_schedule(event: Any, svc: Services) -> FanOut | None:
    """extract_tags: record the run, then publish one small message per active tag."""
    return guard(svc, "extract_tags", svc.cfg.schedule_dlq_topic, event, lambda e: _dispatch(svc, pubsub_message(e)))


def _dispatch(svc: Services, message: PubSubMessage) -> FanOut | None:
    request = ScheduleRequest.from_json(message.json())
    if request.health_check:
        daily.daily_check(svc)
        return None
    return fan_out(svc, _plan(svc.cfg, request, message.publish_time, svc.now()))


def fan_out(svc: Services, plan: RunPlan) -> FanOut:
    """Freeze the run's tags and record the run once, then start one tag per extraction lane (lanes.py);
    each lane passes itself on to the next tag. A duplicate delivery publishes nothing."""
    active = [t for t in warehouse.active_tags(svc) if plan.tag_ids is None or t.tag_id in plan.tag_ids]
    bucket = svc.state  # the lane objects
    tags = lanes.write_manifest(bucket, plan.run_id, active)
    context = {"run_id": str(plan.run_id), "snapshot_date": plan.run_id.snapshot_date.isoformat()}
    if runs.start_run(svc, plan.run_id, len(tags)):
        log.info("run already fanned out; duplicate schedule message ignored", extra=context)
        return FanOut(plan.run_id, len(tags), duplicate=True)
    for task in lanes.start(bucket, plan.run_id, tags, svc.cfg.extraction_lanes):
        lanes.hand_out(svc, task)
    runs.mark_fanned_out(svc, plan.run_id)
    log.info(
        "run started: %d tags in %d lanes",
        len(tags),
        min(len(tags), svc.cfg.extraction_lanes),
        extra={**context, "count": len(tags)},
    )
    return FanOut(plan.run_id, len(tags), duplicate=False)
