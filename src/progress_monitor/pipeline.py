"""The pipeline's stages, called by the thin function adapters in functions/<fn>/main.py.

Failure policy, decided here in one place: a TransientError (or any unexpected exception) propagates, so
Pub/Sub redelivers the event with backoff; a PermanentError is logged with its reason, the message is
published to the stage's dead-letter topic and recorded in the `failures` table, and the event is
acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from google.api_core.exceptions import NotFound

from progress_monitor import gcp, reporting, warehouse
from progress_monitor.cademi import CademiClient, CademiConfigError, CademiError, CallStats
from progress_monitor.errors import PermanentError, TransientError
from progress_monitor.events import ObjectRef, PubSubMessage, pubsub_message, storage_object
from progress_monitor.extraction import Continuation, PieceExtraction
from progress_monitor.secrets import get_secret
from progress_monitor.settings import CADEMI_API_KEY, Settings
from progress_monitor.shards import (
    CONTACTS,
    ProgressTask,
    contacts_name,
    parse_progress_shard,
    progress_shard_name,
    roster_name,
)

log = logging.getLogger("progress_monitor.pipeline")
STALE_AFTER_DAYS = 8
RERUN_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
T = TypeVar("T")

_settings: Settings | None = None
_client: CademiClient | None = None
_lock = threading.Lock()


def settings() -> Settings:
    """The process's settings, read once from the environment."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = Settings.from_env()
        return _settings


def cademi_client(cfg: Settings) -> CademiClient:
    """One Cademi client (one session, one rate limiter) per process, shared by every request."""
    global _client
    with _lock:
        if _client is None:
            _client = CademiClient.from_settings(cfg, get_secret(cfg, CADEMI_API_KEY))
        return _client


def monday_of(moment: datetime, tz: str) -> date:
    """The Monday (in the school's time zone) of the week containing `moment`."""
    local = moment.astimezone(ZoneInfo(tz)).date()
    return local - timedelta(days=local.weekday())


# -- stage 1: the weekly schedule -> one message per tag ---------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    snapshot_date: date
    tags: int
    duplicate: bool


def plan_run(cfg: Settings, message: PubSubMessage, now: datetime | None = None) -> tuple[str, date]:
    """Run id and snapshot week of a schedule message: the same slot always gives the same run.

    The scheduler's message may carry `week` (any date of the wanted week, for a manual or local trigger)
    and `rerun` (a label: a deliberate re-extraction gets its own run id; the history keeps one row per key).
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
    if snapshot > monday_of(now, cfg.timezone):
        raise PermanentError(f"schedule asks for week {snapshot}, which has not started yet")
    run_id = snapshot.isoformat()
    rerun = body.get("rerun")
    if rerun is not None:
        if not isinstance(rerun, str) or not RERUN_LABEL.match(rerun):
            raise PermanentError("schedule field 'rerun' must be a short lower-case label")
        run_id += f"-{rerun}"
    return run_id, snapshot


def handle_schedule(event: Any) -> RunPlan | None:
    """extract_tags: record the run, then publish one small message per active tag."""
    cfg = settings()
    message = pubsub_message(event)
    return _guard(cfg, "extract_tags", cfg.schedule_dlq_topic, message, lambda: _fan_out(cfg, message))


def _fan_out(cfg: Settings, message: PubSubMessage) -> RunPlan | None:
    body = message.json()
    if body.get("health_check") is True:
        resume_stalled_runs(cfg)
        check_data_age(cfg)
        return None
    run_id, snapshot = plan_run(cfg, message)
    tags = warehouse.active_tags(cfg)
    only = body.get("tag_ids")
    if only is not None:
        if not isinstance(only, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in only):
            raise PermanentError("schedule field 'tag_ids' must be a list of integers")
        tags = [t for t in tags if t.tag_id in set(only)]
    context = {"run_id": run_id, "snapshot_date": snapshot.isoformat()}
    if warehouse.start_run(cfg, run_id, snapshot, len(tags)):
        log.info("run already fanned out; duplicate schedule message ignored", extra=context)
        return RunPlan(run_id, snapshot, len(tags), duplicate=True)
    for tag in tags:
        task = ProgressTask(run_id, snapshot, tag.tag_id, tag.product_ids)
        gcp.publish(
            cfg,
            cfg.progress_topic,
            json.dumps(task.to_json()).encode(),
            run_id=run_id,
            tag_id=str(tag.tag_id),
        )
    warehouse.mark_fanned_out(cfg, run_id)
    log.info("run started: %d tags", len(tags), extra={**context, "count": len(tags)})
    return RunPlan(run_id, snapshot, len(tags), duplicate=False)


def resume_run(cfg: Settings, run_id: str) -> list[str]:
    """Re-publish whatever a stalled run is waiting for; safe to call any time (every step is idempotent).

    A tag with no shard gets its piece-0 task again; a tag whose latest shard says where the next piece starts
    gets that continuation again. Pub/Sub normally guarantees both arrive, but a message dead-lettered after
    its attempts (a long outage) would otherwise leave the run unfinished: no week is lost.
    """
    rows = warehouse.query(cfg, "SELECT snapshot_date, status FROM `{runs}` WHERE run_id = @run_id", run_id=run_id)
    if not rows or rows[0]["status"] == "succeeded":
        return []
    snapshot: date = rows[0]["snapshot_date"]
    bucket = gcp.storage(cfg).bucket(cfg.shards_bucket)
    latest: dict[int, Any] = {}
    for blob in bucket.list_blobs(prefix=f"progress/snapshot_date={snapshot.isoformat()}/run={run_id}/"):
        shard = parse_progress_shard(blob.name)
        if shard is not None and (shard.tag_id not in latest or shard.piece > latest[shard.tag_id][0]):
            latest[shard.tag_id] = (shard.piece, blob)
    republished = []
    for tag in warehouse.active_tags(cfg):
        if tag.tag_id not in latest:
            task = ProgressTask(run_id, snapshot, tag.tag_id, tag.product_ids)
            gcp.publish(cfg, cfg.progress_topic, json.dumps(task.to_json()).encode(), run_id=run_id,
                        tag_id=str(tag.tag_id))  # fmt: skip
            republished.append(f"tag {tag.tag_id} piece 0")
            continue
        piece, blob = latest[tag.tag_id]
        meta = blob.metadata or {}
        next_index = _meta_int(meta, "next_index")
        products = tuple(int(p) for p in meta.get("product_ids", "").split(",") if p.isdigit()) or tag.product_ids
        if next_index is not None:
            _publish_continuation(cfg, ProgressTask(run_id, snapshot, tag.tag_id, products, piece), next_index)
            republished.append(f"tag {tag.tag_id} piece {piece + 1}")
    if republished:
        log.warning("resumed a stalled run: %s", ", ".join(republished), extra={"run_id": run_id})
    return republished


def resume_stalled_runs(cfg: Settings, quiet_for: timedelta = timedelta(hours=1)) -> dict[str, list[str]]:
    """Resume every unfinished run with no shard loaded for `quiet_for` (daily health check)."""
    cutoff = datetime.now(UTC) - quiet_for
    stalled = warehouse.query(
        cfg,
        """SELECT r.run_id FROM `{runs}` r LEFT JOIN (SELECT run_id, MAX(loaded_at) AS last_load FROM `{loads}`
           GROUP BY run_id) l ON l.run_id = r.run_id
           WHERE r.status != 'succeeded' AND COALESCE(l.last_load, r.started_at) < @cutoff""",
        cutoff=cutoff,
    )
    return {row["run_id"]: resume_run(cfg, row["run_id"]) for row in stalled}


def check_data_age(cfg: Settings, now: datetime | None = None) -> float | None:
    """Daily health check: ERROR (alerted on) when the last successful run finished over STALE_AFTER ago."""
    rows = warehouse.query(cfg, "SELECT MAX(finished_at) AS finished FROM `{runs}` WHERE status = 'succeeded'")
    finished = rows[0]["finished"] if rows else None
    age_days = None if finished is None else ((now or datetime.now(UTC)) - finished).total_seconds() / 86400
    if age_days is None or age_days > STALE_AFTER_DAYS:
        log.error("progress data is stale: the last successful run finished %s days ago",
                  "never" if age_days is None else f"{age_days:.1f}")  # fmt: skip
    else:
        log.info("data age %.1f days", age_days)
    return age_days


# -- stage 2: one piece of one tag -> a shard in Cloud Storage -------------------------------------------


@dataclass(frozen=True)
class PieceResult:
    shard: str
    records: int
    next_piece: int | None
    skipped: bool


def handle_progress_task(event: Any) -> PieceResult | None:
    """extract_progress: extract one piece, write its shard once, publish the continuation."""
    cfg = settings()
    message = pubsub_message(event)
    return _guard(cfg, "extract_progress", cfg.progress_dlq_topic, message, lambda: _extract_piece(cfg, message))


def _extract_piece(cfg: Settings, message: PubSubMessage) -> PieceResult:
    task = ProgressTask.from_json(message.json())
    context = {"run_id": task.run_id, "tag_id": task.tag_id, "piece": task.piece}
    bucket = gcp.storage(cfg).bucket(cfg.shards_bucket)
    name = progress_shard_name(task.snapshot_date, task.run_id, task.tag_id, task.piece)
    existing = _get_blob(bucket, name)
    if existing is not None:
        # A redelivery or duplicate of a piece that already finished: only pass its continuation on.
        log.info("shard already written; nothing to extract", extra={**context, "shard": name})
        return _follow_existing(cfg, task, existing, name)
    try:
        client = cademi_client(cfg)
    except Exception as exc:
        raise PermanentError(f"Cademi client cannot be configured: {exc}") from exc
    stats = CallStats()
    try:
        roster = _freeze_roster(bucket, task, client, stats) if task.piece == 0 else _read_roster(bucket, task)
        if task.next_index > len(roster) or (task.piece > 0 and task.next_index == len(roster)):
            raise PermanentError(f"task next_index {task.next_index} is outside the roster of {len(roster)}")
        piece = PieceExtraction(
            client, tag_id=task.tag_id, product_ids=task.product_ids, snapshot_date=task.snapshot_date,
            run_id=task.run_id, budget_s=cfg.piece_budget_s, workers=cfg.cademi_workers, stats=stats,
            start=Continuation(task.tag_id, task.run_id, task.snapshot_date, task.piece, task.next_index, roster),
        )  # fmt: skip
        statuses: Counter[str] = Counter()
        with tempfile.TemporaryFile("w+b") as spool:
            for record in piece.records():
                spool.write(_ndjson(record.to_json()))
                statuses[record.status] += 1
            cont = piece.continuation
            calls = stats.snapshot()
            metadata = {
                "run_id": task.run_id, "tag_id": str(task.tag_id), "piece": str(task.piece),
                "snapshot_date": task.snapshot_date.isoformat(), "records": str(statuses.total()),
                "failed": str(statuses["failed"]), "no_access": str(statuses["no_access"]),
                "students": str(piece.students_done), "api_calls": str(calls.get("requests", 0)),
                "rate_limited": str(calls.get("rate_limited", 0)), "last_piece": "false" if cont else "true",
                "product_ids": ",".join(str(p) for p in task.product_ids),
            }  # fmt: skip
            if cont is not None:
                metadata["next_index"] = str(cont.next_index)
            spool.seek(0)
            created = _create_once(bucket, name, spool, metadata, "application/x-ndjson")
    except CademiConfigError as exc:
        raise PermanentError(f"Cademi refused our credentials ({exc.code}): fix the API key or URL") from exc
    except CademiError as exc:
        raise TransientError(f"listing tag {task.tag_id} failed: {exc}") from exc
    if not created:
        # A concurrent duplicate wrote this piece first, maybe cut at another student: follow *its*
        # continuation, so the next piece starts exactly where the stored shard ends.
        return _follow_existing(cfg, task, _get_blob(bucket, name), name)
    if cont is not None:
        _publish_continuation(cfg, task, cont.next_index)
    log.info("piece extracted: %d records, %d failed", statuses.total(), statuses["failed"],
             extra={**context, "shard": name, "count": statuses.total()})  # fmt: skip
    return PieceResult(name, statuses.total(), cont.piece if cont else None, skipped=False)


def _follow_existing(cfg: Settings, task: ProgressTask, existing: Any, name: str) -> PieceResult:
    if existing is None:
        raise TransientError(f"shard {name} vanished after a conflicting write")
    next_index = _meta_int(existing.metadata, "next_index")
    if next_index is not None:
        _publish_continuation(cfg, task, next_index)
    records = _meta_int(existing.metadata, "records") or 0
    return PieceResult(name, records, task.piece + 1 if next_index is not None else None, skipped=True)


def _ndjson(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _get_blob(bucket: Any, name: str) -> Any:
    from google.api_core import exceptions

    try:
        return bucket.get_blob(name)
    except exceptions.GoogleAPIError as exc:
        raise TransientError(f"cannot read gs://{bucket.name}/{name}: {type(exc).__name__}") from exc


def _create_once(bucket: Any, name: str, data: Any, metadata: dict[str, str], content_type: str) -> bool:
    """Upload only if absent (generation 0); False when the object already existed (ours is dropped)."""
    from google.api_core import exceptions

    blob = bucket.blob(name)
    blob.metadata = metadata
    try:
        if isinstance(data, bytes):
            blob.upload_from_string(data, content_type=content_type, if_generation_match=0)
        else:
            # With a known size the library sends one multipart request. Without it, it opens a resumable
            # upload, and fake-gcs-server does not enforce ifGenerationMatch on those (found by the soak).
            size = data.seek(0, 2)
            data.seek(0)
            blob.upload_from_file(data, content_type=content_type, if_generation_match=0, size=size)
    except exceptions.PreconditionFailed:
        log.info("object already exists; keeping the first one", extra={"shard": name})
        return False
    except exceptions.GoogleAPIError as exc:
        raise TransientError(f"cannot write gs://{bucket.name}/{name}: {type(exc).__name__}") from exc
    return True


def _freeze_roster(bucket: Any, task: ProgressTask, client: CademiClient, stats: CallStats) -> tuple[int, ...]:
    """Piece 0 lists the tag and stores its roster (ids only) once per run: every piece, duplicate or
    redelivery of the run then extracts the same students in the same order. It also hands the students'
    contact data to the loader."""
    from google.api_core import exceptions

    students = list(client.iter_tag_students(task.tag_id, stats))
    blob = bucket.blob(roster_name(task.snapshot_date, task.run_id, task.tag_id))
    try:
        blob.upload_from_string(json.dumps({"user_ids": [s.user_id for s in students]}),
                                content_type="application/json", if_generation_match=0)  # fmt: skip
        user_ids = tuple(s.user_id for s in students)
    except exceptions.PreconditionFailed:
        user_ids = _read_roster(bucket, task)  # an earlier attempt froze it: keep that one
    except exceptions.GoogleAPIError as exc:
        raise TransientError(f"cannot write roster: {type(exc).__name__}") from exc
    if students:
        contacts = b"".join(
            _ndjson({"user_id": s.user_id, "nome": s.nome, "email": s.email, "celular": s.celular}) for s in students
        )
        _create_once(bucket, contacts_name(task.snapshot_date, task.run_id, task.tag_id), contacts,
                     {"tag_id": str(task.tag_id)}, "application/x-ndjson")  # fmt: skip
    return user_ids


def _read_roster(bucket: Any, task: ProgressTask) -> tuple[int, ...]:
    blob = _get_blob(bucket, roster_name(task.snapshot_date, task.run_id, task.tag_id))
    if blob is None:
        raise PermanentError(f"roster of tag {task.tag_id} for run {task.run_id} is missing")
    try:
        ids = json.loads(blob.download_as_bytes())["user_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
            raise ValueError("user_ids must be positive integers")
        if len(set(ids)) != len(ids):
            raise ValueError("user_ids repeat")
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"roster of tag {task.tag_id} is unusable: {exc}") from exc
    return tuple(ids)


def _publish_continuation(cfg: Settings, task: ProgressTask, next_index: int) -> None:
    nxt = ProgressTask(task.run_id, task.snapshot_date, task.tag_id, task.product_ids, task.piece + 1, next_index)
    gcp.publish(
        cfg,
        cfg.progress_topic,
        json.dumps(nxt.to_json()).encode(),
        run_id=task.run_id,
        tag_id=str(task.tag_id),
        piece=str(nxt.piece),
    )


def _meta_int(metadata: dict[str, str] | None, key: str) -> int | None:
    value = (metadata or {}).get(key)
    return int(value) if value is not None and value.isdigit() else None


# -- stage 3: a finalized shard -> BigQuery ----------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    shard: str
    kind: str
    rows: int


def handle_shard_event(event: Any) -> LoadResult | None:
    """load_history: load a finalized object into BigQuery (Eventarc CloudEvent or Pub/Sub notification)."""
    cfg = settings()
    message_id = str(event.get("id") or "") if hasattr(event, "get") else ""
    try:
        ref = storage_object(event)
    except PermanentError as exc:
        _dead_letter(cfg, "load_history", cfg.shards_dlq_topic, message_id, b"", str(exc), {})
        return None
    if ref is None:
        return None
    payload = json.dumps({"bucket": ref.bucket, "name": ref.name, "generation": ref.generation}).encode()
    message = PubSubMessage(message_id, payload, {}, None)
    return _guard(cfg, "load_history", cfg.shards_dlq_topic, message, lambda: load_object(cfg, ref))


def load_object(cfg: Settings, ref: ObjectRef, refresh_reports: bool = True) -> LoadResult | None:
    """Load one object of the shards bucket (progress shard or contacts); other objects are ignored."""
    if ref.bucket != cfg.shards_bucket:
        raise PermanentError(f"event for unexpected bucket {ref.bucket!r}")
    uri = f"gs://{ref.bucket}/{ref.name}"
    bucket = gcp.storage(cfg).bucket(ref.bucket)
    shard = parse_progress_shard(ref.name)
    if shard is not None:
        blob = _get_blob(bucket, ref.name)
        if blob is None:
            log.warning("shard no longer exists; nothing to load", extra={"shard": ref.name})
            return None
        meta = blob.metadata or {}
        counts = {k: _meta_int(meta, k) or 0 for k in ("failed", "no_access", "students", "api_calls", "rate_limited")}
        context = {"run_id": shard.run_id, "tag_id": shard.tag_id, "piece": shard.piece, "shard": ref.name}
        outcome = warehouse.load_progress_shard(
            cfg, uri, int(blob.generation), shard=ref.name, run_id=shard.run_id, snapshot_date=shard.snapshot_date,
            tag_id=shard.tag_id, piece=shard.piece, last_piece=meta.get("last_piece") == "true",
            extraction_counts=counts, today=monday_of(datetime.now(UTC), cfg.timezone) + timedelta(days=6),
        )  # fmt: skip
        if refresh_reports and warehouse.run_status(cfg, shard.run_id) == "succeeded":
            log.info("run succeeded", extra={"run_id": shard.run_id})
            _refresh_reports(cfg, shard.run_id)
        rejected = outcome.rows_in_shard - outcome.rows_merged
        level = logging.WARNING if rejected else logging.INFO
        log.log(
            level,
            "shard loaded: %d rows merged, %d rejected by quality checks",
            outcome.rows_merged,
            rejected,
            extra={**context, "count": outcome.rows_merged},
        )
        return LoadResult(ref.name, "progress", outcome.rows_merged)
    match = CONTACTS.match(ref.name)
    if match:
        blob = _get_blob(bucket, ref.name)
        if blob is None:
            return None  # already merged and deleted by an earlier delivery
        try:
            rows = warehouse.load_contacts(cfg, uri, int(blob.generation), tag_id=int(match["tag"]),
                                           snapshot_date=date.fromisoformat(match["date"]))  # fmt: skip
        except PermanentError:
            if _get_blob(bucket, ref.name) is None:
                return None  # a concurrent delivery merged and deleted it while we were loading
            raise
        with contextlib.suppress(NotFound):
            blob.delete()  # contact data lives only in the restricted table
        return LoadResult(ref.name, "contacts", rows)
    return None  # rosters and other objects are not loaded


def _refresh_reports(cfg: Settings, run_id: str) -> None:
    """The run is complete: rebuild what the dashboards read. The load itself already succeeded, so a
    failure here is logged for the operator (run health shows stale reports) instead of redelivering."""
    try:
        reporting.refresh(cfg)
        warehouse.query(cfg, "UPDATE `{runs}` SET reports_refreshed_at = @now WHERE run_id = @run_id",
                        now=datetime.now(UTC), run_id=run_id)  # fmt: skip
    except Exception:
        log.exception("reporting refresh failed after the run completed", extra={"run_id": run_id})


# -- the failure policy ----------------------------------------------------------------------------------


def _guard(cfg: Settings, stage: str, dlq_topic: str, message: PubSubMessage, work: Callable[[], T]) -> T | None:
    try:
        return work()
    except PermanentError as exc:
        _dead_letter(cfg, stage, dlq_topic, message.message_id, message.data, str(exc), message.attributes)
        return None


def _dead_letter(
    cfg: Settings,
    stage: str,
    topic: str,
    message_id: str,
    data: bytes,
    reason: str,
    attributes: dict[str, str],
) -> None:
    """Log the reason, keep the message on the dead-letter topic, and record it for run health."""
    context: dict[str, Any] = {"reason": reason, "event_id": message_id}
    run_id = attributes.get("run_id")
    tag = attributes.get("tag_id")
    tag_id = int(tag) if tag and tag.isdigit() else None
    piece = attributes.get("piece")
    log.error(
        "permanent failure in %s; message dead-lettered: %s",
        stage,
        reason,
        extra={**context, "run_id": run_id, "tag_id": tag_id},
    )
    gcp.publish(
        cfg,
        topic,
        data[: 9 * 1024 * 1024],
        stage=stage,
        reason=reason[:1000],
        original_message_id=message_id or "",
        **{k: v for k, v in attributes.items() if k in ("run_id", "tag_id", "piece")},
    )
    run = run_id if run_id and re.match(r"^[0-9a-z-]{10,41}$", run_id) else None
    warehouse.record_failure(
        cfg,
        stage,
        reason,
        run_id=run,
        tag_id=tag_id,
        piece=int(piece) if piece and piece.isdigit() else None,
        message_id=message_id or None,
    )


def reset_for_tests() -> None:
    """Forget cached settings and clients (tests that change the environment)."""
    global _settings, _client
    with _lock:
        _settings, _client = None, None
    gcp.reset()
