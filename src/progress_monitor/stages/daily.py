"""The daily health check (the schedule topic's `{"health_check": true}` message) and the resume command.

No week is lost: a run whose messages were dead-lettered or dropped is resumed from what its shards say.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from progress_monitor.contracts.events import ObjectRef, finalize_notification
from progress_monitor.contracts.messages import DigestTask, ProgressTask
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline import lanes, runs
from progress_monitor.platform import warehouse
from progress_monitor.platform.shard_store import latest_shards, run_objects
from progress_monitor.privacy import retention
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.stages.daily")
STALE_AFTER_DAYS = 8


DIGEST_WINDOW = timedelta(days=7)


RECONCILE_WINDOW = timedelta(days=14)


def daily_check(svc: Services) -> None:
    resume_stalled_runs(svc)
    reconcile_recent_runs(svc)
    request_recent_digests(svc)
    check_data_age(svc)
    retention.enforce(svc)  # LGPD: stale contact data deleted (docs/privacy.md)


def request_recent_digests(svc: Services) -> list[str]:
    """Ask again for the digests of the newest week (its latest finished run, finished in the last 7 days): a
    request lost with load_history, a task dead-lettered in a long Slack outage or a channel Slack refused is
    posted now; channels already posted are skipped by the worker, so asking daily is safe. A past week is
    never asked for again (stages/load.py follow_up)."""
    rows = warehouse.query(
        svc,
        "SELECT run_id FROM `${runs}` WHERE status IN UNNEST(@finished) AND reports_refreshed_at >= @since "
        "AND snapshot_date = (SELECT MAX(snapshot_date) FROM `${runs}`) ORDER BY started_at DESC LIMIT 1",
        finished=list(runs.FINISHED),
        since=svc.now() - DIGEST_WINDOW,
    )
    asked = [run_id for row in rows if (run_id := RunId.parse_or_none(row["run_id"])) is not None]
    for run_id in asked:
        svc.send(DigestTask(run_id))
    return [str(run_id) for run_id in asked]


def resume_run(svc: Services, run_id: RunId) -> list[str]:
    """Re-publish whatever an unfinished run is waiting for; safe any time (every step is idempotent).

    Objects written but never loaded get their finalize event again (reload_unloaded). Each claimed tag with
    no shard gets its piece-0 task again, and each one whose latest shard says where the next piece starts gets
    that continuation again; then, if fewer tags are in progress than there are lanes (a lane's message was
    lost), lanes are opened again on the unclaimed tags. Pub/Sub normally delivers everything, but a message
    dead-lettered after its attempts (a long outage) would otherwise leave the run unfinished. The tags are the
    run's own, frozen in its manifest when it started, not today's registry.
    """
    status = runs.run_status(svc, run_id)
    if status is None or status in runs.ENDED:
        return []
    reloaded = reload_unloaded(svc, run_id)  # loading what was extracted is right for any week
    if (refusal := runs.extraction_refusal(svc.cfg, run_id.snapshot_date, svc.now())) is not None:
        log.error(
            "run %s cannot be resumed (%s): nothing re-extracted; close it (replay close) once its shards are loaded",
            run_id,
            refusal,
            extra={"run_id": str(run_id)},
        )
        return reloaded
    try:
        tags = lanes.read_manifest(svc.state, run_id)
    except PermanentError as exc:
        log.error("run %s cannot be resumed: %s", run_id, exc, extra={"run_id": str(run_id)})
        return []
    latest = latest_shards(svc.shards, run_id)
    held = lanes.claims(svc.state, run_id)
    republished = []
    in_progress = 0
    for tag in tags:
        shard = latest.get(tag.tag_id)
        if tag.tag_id not in held:
            continue  # not started: its lane has not reached it
        if shard is None:
            svc.send(ProgressTask(run_id, tag.tag_id, tag.product_ids))
            republished.append(f"tag {tag.tag_id} piece 0")
        elif shard.next_index is not None:
            svc.send(shard.task.next(shard.next_index))
            republished.append(f"tag {tag.tag_id} piece {shard.task.piece + 1}")
        else:
            continue  # done
        in_progress += 1
    for task in lanes.reopen(svc.state, run_id, tags, svc.cfg.extraction_lanes - in_progress):
        lanes.hand_out(svc, task)
        republished.append(f"tag {task.tag_id} piece 0")
    if republished:
        log.warning("resumed a stalled run: %s", ", ".join(republished), extra={"run_id": str(run_id)})
    return reloaded + republished


def reload_unloaded(svc: Services, run_id: RunId) -> list[str]:
    """Re-send the finalize event of every object of the run written but never loaded (its event was lost):
    a shard with no `loads` row at its generation, or a contacts file still there (merging deletes it)."""
    cfg = svc.cfg
    written = run_objects(svc.shards, run_id)
    loaded = {
        row["shard"]: int(row["generation"])
        for row in warehouse.query(
            svc, "SELECT shard, generation FROM `${loads}` WHERE run_id = @run_id", run_id=str(run_id)
        )
    }
    reloaded = []
    for name, generation in sorted(written.items()):
        if loaded.get(name, -1) >= generation:
            continue
        ref = ObjectRef(cfg.shards_bucket, name, generation)
        svc.publish(cfg.shard_reloads_topic, b"", finalize_notification(ref))
        reloaded.append(f"reload {name}")
    if reloaded:
        log.warning("re-sent %d lost load events", len(reloaded), extra={"run_id": str(run_id), "count": len(reloaded)})
    return reloaded


def reconcile_recent_runs(svc: Services) -> int:
    """No shard left behind: every object of an ended run started in the last 14 days in the shards bucket, which
    holds only loadable objects (a progress shard, a contacts file not yet merged), is in the loads ledger, or its
    finalize event is sent again (reload_unloaded). Eventarc drops a delivery that failed for a day without a dead
    letter, and a contacts file is loaded after its run may already have finished; unfinished runs are
    resume_stalled_runs' to handle. Returns how many were sent again (logged at WARNING, with each run, and added to
    the run's `reconciled`, which run health shows)."""
    rows = warehouse.query(
        svc,
        "SELECT run_id FROM `${runs}` WHERE status IN UNNEST(@ended) AND started_at >= @since",
        ended=list(runs.ENDED),
        since=svc.now() - RECONCILE_WINDOW,
    )
    sent = 0
    for row in rows:
        run_id = RunId.parse_or_none(row["run_id"])
        if run_id is not None and (count := len(reload_unloaded(svc, run_id))):
            runs.add_reconciled(svc, run_id, count)
            sent += count
    return sent


def resume_stalled_runs(svc: Services, quiet_for: timedelta = timedelta(hours=1)) -> dict[str, list[str]]:
    """Resume every unfinished run with no shard loaded for `quiet_for`."""
    stalled = warehouse.query(
        svc,
        """SELECT r.run_id FROM `${runs}` r LEFT JOIN (SELECT run_id, MAX(loaded_at) AS last_load FROM `${loads}`
           GROUP BY run_id) l ON l.run_id = r.run_id
           WHERE r.status NOT IN UNNEST(@ended) AND COALESCE(l.last_load, r.started_at) < @cutoff""",
        cutoff=svc.now() - quiet_for,
        ended=list(runs.ENDED),
    )
    resumed = {}
    for row in stalled:
        run_id = RunId.parse_or_none(row["run_id"])
        if run_id is None:
            log.error("runs table holds a malformed run id; not resumed", extra={"run_id": str(row["run_id"])[:40]})
            continue
        resumed[str(run_id)] = resume_run(svc, run_id)
    return resumed


def check_data_age(svc: Services) -> float | None:
    """ERROR (alerted on) when the last successful run finished more than STALE_AFTER_DAYS ago."""
    rows = warehouse.query(svc, "SELECT MAX(finished_at) AS finished FROM `${runs}` WHERE status = 'succeeded'")
    finished = rows[0]["finished"] if rows else None
    age_days = None if finished is None else (svc.now() - finished).total_seconds() / 86400
    if age_days is None or age_days > STALE_AFTER_DAYS:
        age = "never" if age_days is None else f"{age_days:.1f}"
        log.error("progress data is stale: the last successful run finished %s days ago", age)
    else:
        log.info("data age %.1f days", age_days)
    return age_days
