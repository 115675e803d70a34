"""Carrying's I/O: the earlier observations (BigQuery), the plan piece 0 freezes, and the school-wide switch.

The switch is one object in the state bucket, `carry/off.json`, created when the verification sample finds a
mismatch. While it exists every run reads every student. An operator turns carrying back on with

    python -m progress_monitor carrying status     # is carrying off, and since which mismatch
    python -m progress_monitor carrying on         # turn it back on (deletes the object)

with the same settings (environment) as the functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.carrying import rule
from progress_monitor.carrying.rule import Previous
from progress_monitor.contracts.carry_plan import CarryPlan
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import CARRY_OFF_OBJECT, carry_off_body, carry_plan_name
from progress_monitor.errors import GOOGLE_ERRORS, PermanentError, TransientError, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.platform.shard_store import JSON, Roster, create_once, get_blob
from progress_monitor.platform.warehouse import query
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.carrying.store")

# Per student x product of a tag: its latest row before this week (within the full-read window), and the
# latest last access any of the student's rows in this class recorded (to refuse one that moves backwards).
PREVIOUS_SQL = """
SELECT user_id, product_id, status, total, assistidas, completas, source_run, observed_at, known_access FROM (
  SELECT user_id, product_id, status, total, assistidas, completas,
         COALESCE(carried_from, run_id) AS source_run, extracted_at AS observed_at,
         MAX(last_access_at) OVER (PARTITION BY user_id) AS known_access,
         ROW_NUMBER() OVER (PARTITION BY user_id, product_id ORDER BY snapshot_date DESC) AS rn
  FROM `${progress_history}`
  WHERE tag_id = @tag_id AND snapshot_date < @snapshot_date AND snapshot_date >= @since
) WHERE rn = 1"""


def previous_observations(svc: Services, task: ProgressTask) -> dict[tuple[int, int], Previous]:
    """This class's latest earlier row per student x product: only this student's, in this class, for this
    product, whatever the listing says."""
    since = task.snapshot_date - timedelta(weeks=svc.cfg.carry_full_read_weeks)
    rows = query(svc, PREVIOUS_SQL, tag_id=task.tag_id, snapshot_date=task.snapshot_date, since=since)
    return {
        (int(r["user_id"]), int(r["product_id"])): Previous(
            status=str(r["status"]),
            total=r["total"],
            assistidas=r["assistidas"],
            completas=r["completas"],
            source_run=str(r["source_run"]),
            known_access=r["known_access"],
            observed_at=r["observed_at"],
        )
        for r in rows
    }


def is_off(bucket: storage.Bucket) -> bool:
    return get_blob(bucket, CARRY_OFF_OBJECT) is not None


def plan_for_piece(svc: Services, task: ProgressTask, roster: Roster, units: Sequence[tuple[int, ...]]) -> CarryPlan:
    """What this piece may carry: piece 0 decides and freezes the plan once per run; later pieces read it.
    Empty (read everyone) when INCREMENTAL is off, on a re-run label or re-extraction, or while switched off."""
    cfg, bucket = svc.cfg, svc.state
    context: dict[str, Any] = {"run_id": str(task.run_id), "tag_id": task.tag_id, "piece": task.piece}
    if cfg.incremental != "on" or task.run_id.label is not None:
        return CarryPlan()
    if is_off(bucket):
        log.info("carrying is switched off; reading every student", extra=context)
        return CarryPlan()
    name = carry_plan_name(task.run_id, task.tag_id)
    if task.piece > 0:
        return _read_plan(bucket, name)
    try:
        previous = previous_observations(svc, task)
    except (TransientError, PermanentError) as exc:  # carrying only saves calls: never fail a piece over it
        log.error("cannot read earlier observations; reading every student: %s", exc, extra=context)
        return CarryPlan()
    plan, reasons = rule.plan(
        run_id=task.run_id,
        tag_id=task.tag_id,
        roster=roster.user_ids,
        units=units,
        last_access_at=roster.last_access_at,
        previous=previous,
        tz=cfg.timezone,
        full_read_weeks=cfg.carry_full_read_weeks,
        sample_share=cfg.carry_sample_share,
    )
    if not create_once(bucket, name, plan.to_body(), {}, JSON):
        return _read_plan(bucket, name)  # a duplicate of piece 0 decided first: every piece follows it
    log.info(
        "carry plan: %d students carried (%d verified anyway); pairs by reason: %s",
        len(plan.carried),
        len(plan.sample),
        json.dumps({str(k): v for k, v in sorted(reasons.items())}),
        extra=context,
    )
    return plan


@needs("objects.read {name}")
def _read_plan(bucket: storage.Bucket, name: str) -> CarryPlan:
    blob = get_blob(bucket, name)
    if blob is None:
        return CarryPlan()  # piece 0 decided to read everyone (or ran before carrying existed)
    try:
        return CarryPlan.from_body(blob.download_as_bytes())
    except ValueError as exc:
        log.error("carry plan %s is unusable; reading every student: %s", name, exc)
        return CarryPlan()
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot read the carry plan {name}") from exc


def switch_off(bucket: storage.Bucket, task: ProgressTask, user_id: int, product_id: int, *, now: datetime) -> None:
    """Turn carrying off for the school (the first mismatch is kept; later ones find it off already)."""
    body = carry_off_body(task.run_id, task.tag_id, user_id, product_id, now)
    if create_once(bucket, CARRY_OFF_OBJECT, body, {}, JSON):
        log.error(
            "carrying switched off for the school after a mismatch; turn it back on with "
            "`python -m progress_monitor carrying on` once understood",
            extra={"run_id": str(task.run_id), "tag_id": task.tag_id, "piece": task.piece},
        )


@needs("objects.read {CARRY_OFF_OBJECT}")
def status(svc: Services) -> dict[str, Any]:
    """Whether carrying is on, the mismatch that switched it off, and the assurance: every carried student is
    read at least every `carry_full_read_weeks` weeks (rule.FULL_READ_DUE), so a change Cademi made without
    moving the last access (staff granting or revoking a product, a corrected total) stays unseen that long at
    most; the 5 % sample may see it sooner."""
    on = {
        "incremental": svc.cfg.incremental,
        "unseen_change_at_most_weeks": svc.cfg.carry_full_read_weeks,
        "sample_share": svc.cfg.carry_sample_share,
    }
    blob = get_blob(svc.state, CARRY_OFF_OBJECT)
    if blob is None:
        return {**on, "switched_off": False}
    try:
        detail = json.loads(blob.download_as_bytes())
    except (*GOOGLE_ERRORS, ValueError) as exc:
        detail = {"unreadable": str(exc)[:200]}
    return {**on, "switched_off": True, "since": detail}


@needs("objects.read {CARRY_OFF_OBJECT}", "objects.delete {CARRY_OFF_OBJECT}")
def switch_on(svc: Services) -> bool:
    """Turn carrying back on; True when it was off."""
    blob = get_blob(svc.state, CARRY_OFF_OBJECT)
    if blob is None:
        return False
    try:
        blob.delete()
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot delete the carry switch") from exc
    log.warning("carrying switched back on by an operator")
    return True
