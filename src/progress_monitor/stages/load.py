"""Stage 3, load_history: a finalized object in the shards bucket -> BigQuery, exactly once per key.

Progress shards are merged into the history; contacts files into the restricted students table (and then
deleted); rosters and any other object are ignored. When a run's last shard lands, the reports are rebuilt.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from google.api_core.exceptions import NotFound

from progress_monitor.contracts.events import ObjectRef, storage_object
from progress_monitor.contracts.messages import DigestTask
from progress_monitor.contracts.objects import ShardMeta, ShardName, parse_contacts, parse_progress_shard
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import PermanentError
from progress_monitor.pipeline import loader, reporting, runs
from progress_monitor.pipeline.failures import guard
from progress_monitor.platform.access import needs
from progress_monitor.platform.shard_store import get_blob
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.load")


@dataclass(frozen=True)
class LoadResult:
    shard: str
    kind: str
    rows: int


def handle_shard_event(event: Any, svc: Services) -> LoadResult | None:
    """load_history: load a finalized object (Eventarc CloudEvent, or fake-gcs-server's Pub/Sub notification)."""

    def load(e: Any) -> LoadResult | None:
        ref = storage_object(e)
        return None if ref is None else load_object(svc, ref)

    return guard(svc, "load_history", svc.cfg.shards_dlq_topic, event, load)


def load_object(svc: Services, ref: ObjectRef, refresh_reports: bool = True) -> LoadResult | None:
    """Load one object of the shards bucket (progress shard or contacts). The bucket holds nothing else: rosters,
    lanes, carry plans, digest claims, erasures and the Cademi budget live in the state bucket, which no trigger
    watches (contracts.objects.bucket_of). Any other name (a stray or forged object) is logged and ignored."""
    if ref.bucket != svc.cfg.shards_bucket:
        raise PermanentError(f"event for unexpected bucket {ref.bucket!r}")
    if (shard := parse_progress_shard(ref.name)) is not None:
        return _load_progress(svc, ref, shard, refresh_reports)
    if (contacts := parse_contacts(ref.name)) is not None:
        return _load_contacts(svc, ref, contacts.tag_id, contacts.run_id)
    log.warning("an object that is neither a progress shard nor a contacts file; ignored", extra={"shard": ref.name})
    return None


def _load_progress(svc: Services, ref: ObjectRef, shard: ShardName, refresh_reports: bool) -> LoadResult | None:
    blob = get_blob(svc.shards, ref.name)
    if blob is None:
        log.warning("shard no longer exists; nothing to load", extra={"shard": ref.name})
        return None
    meta = ShardMeta.from_metadata(blob.metadata, shard)
    uri = f"gs://{ref.bucket}/{ref.name}"
    outcome = loader.load_progress_shard(svc, uri, ref.name, int(blob.generation or 0), meta)
    if refresh_reports:
        state = runs.run_state(svc, shard.run_id)
        then = follow_up(shard.run_id, state, outcome.rows_merged)
        if then.refresh_reports:
            if not state.reports_refreshed:  # this load finished the run
                _log_finished(svc, shard.run_id, state.status)
            _refresh_reports(svc, shard.run_id, first=not state.reports_refreshed, digests=then.request_digests)
    rejected = outcome.rows_in_shard - outcome.rows_merged
    log.log(
        logging.WARNING if rejected else logging.INFO,
        "shard loaded: %d rows merged, %d rejected by quality checks or duplicated",
        outcome.rows_merged,
        rejected,
        extra={
            "run_id": str(shard.run_id),
            "tag_id": shard.tag_id,
            "piece": shard.piece,
            "shard": ref.name,
            "count": outcome.rows_merged,
        },
    )
    return LoadResult(ref.name, "progress", outcome.rows_merged)


@needs("objects.read {contacts_name}", "objects.delete {contacts_name}")  # merged, then deleted
def _load_contacts(svc: Services, ref: ObjectRef, tag_id: int, run_id: RunId) -> LoadResult | None:
    bucket = svc.shards
    blob = get_blob(bucket, ref.name)
    if blob is None:
        return None  # already merged and deleted by an earlier delivery
    uri = f"gs://{ref.bucket}/{ref.name}"
    try:
        rows = loader.load_contacts(
            svc, uri, int(blob.generation or 0), tag_id=tag_id, snapshot_date=run_id.snapshot_date
        )
    except PermanentError:
        if get_blob(bucket, ref.name) is None:
            return None  # a concurrent delivery merged and deleted it while we were loading
        raise
    with contextlib.suppress(NotFound):
        blob.delete()  # contact data lives only in the restricted table
    return LoadResult(ref.name, "contacts", rows)


def _log_finished(svc: Services, run_id: RunId, status: str | None) -> None:
    if status == "incomplete":
        log.error(
            "run finished incomplete: more than %.0f%% of its extractions failed; good rows were kept",
            100 * svc.cfg.run_max_failed_share,
            extra={"run_id": str(run_id)},
        )
    else:
        log.info("run succeeded", extra={"run_id": str(run_id)})


@dataclass(frozen=True)
class FollowUp:
    """What a load of a progress shard leads to besides the merge."""

    refresh_reports: bool
    request_digests: bool


NOTHING = FollowUp(refresh_reports=False, request_digests=False)


def follow_up(run_id: RunId, state: runs.RunState, rows_merged: int) -> FollowUp:
    """The load that finishes a run rebuilds the reports and asks for the tutors' digests, once per run and only
    for the newest week (a past week's digest would name students of a list long gone). A later load of a
    finished run (a replay, a duplicate, a shard an erasure rewrote) rebuilds the reports when it changed the
    history, and nothing else: no digest is posted again."""
    if state.status not in runs.FINISHED:
        return NOTHING
    if not state.reports_refreshed:
        newest = state.newest_week is None or run_id.snapshot_date >= state.newest_week
        return FollowUp(refresh_reports=True, request_digests=newest)
    return FollowUp(refresh_reports=rows_merged > 0, request_digests=False)


def _refresh_reports(svc: Services, run_id: RunId, *, first: bool, digests: bool) -> None:
    """Rebuild what the dashboards read. The load itself already succeeded, so a failure here is logged for the
    operator (run health shows stale reports) instead of redelivering."""
    try:
        reporting.refresh(svc)
        if first:
            runs.mark_reports_refreshed(svc, run_id)
    except Exception:
        log.exception("reporting refresh failed after the run completed", extra={"run_id": str(run_id)})
        return
    if not digests:
        return
    try:
        # The tutors' digests go through their own topic: a Slack outage is retried there, never here.
        svc.send(DigestTask(run_id))
    except Exception:
        log.exception("could not request the tutors' digests", extra={"run_id": str(run_id)})
