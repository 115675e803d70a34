"""Stage 2, extract_progress: one progress task -> one shard in Cloud Storage, written once, and the
task of the next piece when the time budget ran out before the tag's roster did."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.carrying import store
from progress_monitor.contracts.cademi import CallStats, Student
from progress_monitor.contracts.events import PubSubMessage, pubsub_message
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import ShardMeta, parse_progress_shard, progress_shard_name
from progress_monitor.contracts.values import Status, TimestampError, parse_cademi_time
from progress_monitor.errors import (
    CademiError,
    CademiOutageError,
    PermanentError,
    SecretUnavailableError,
    TransientError,
    pipeline_error,
)
from progress_monitor.pipeline import lanes, runs
from progress_monitor.pipeline.extraction import PieceExtraction
from progress_monitor.pipeline.failures import guard
from progress_monitor.platform.shard_store import NDJSON, create_once, freeze_roster, get_blob, ndjson, read_roster
from progress_monitor.privacy import erasures
from progress_monitor.services import Services
from progress_monitor.settings import Settings

log = logging.getLogger("progress_monitor.extract")


@dataclass(frozen=True)
class PieceResult:
    shard: str
    records: int
    next_piece: int | None
    skipped: bool  # the shard already existed (a redelivery or a duplicate)


def handle_progress_task(event: Any, svc: Services) -> PieceResult | None:
    """extract_progress: extract one piece, write its shard once, publish the continuation."""
    return guard(
        svc, "extract_progress", svc.cfg.progress_dlq_topic, event, lambda e: extract_piece(svc, pubsub_message(e))
    )


def extract_piece(svc: Services, message: PubSubMessage) -> PieceResult:
    cfg = svc.cfg
    task = ProgressTask.from_json(message.json())
    context = {"run_id": str(task.run_id), "tag_id": task.tag_id, "piece": task.piece}
    bucket = svc.shards
    name = progress_shard_name(task)
    existing = get_blob(bucket, name)
    if existing is not None:
        # A redelivery or duplicate of a piece that already finished: only pass its continuation on.
        log.info("shard already written; nothing to extract", extra={**context, "shard": name})
        return _follow_existing(svc, name, existing)
    if (refusal := runs.extraction_refusal(cfg, task.snapshot_date, svc.now())) is not None:
        # A piece still retried after its week ended would file today's progress under that week: the run ends
        # unfinished (its other shards are kept) and the operator closes it (docs/operations.md).
        raise PermanentError(f"piece not extracted: {refusal}")
    try:
        client = svc.cademi()
    except SecretUnavailableError as exc:
        # Often a passing Secret Manager hiccup: redelivered with backoff, not a day's wait for the health check.
        raise pipeline_error(exc, "Cademi API key unavailable") from exc
    stats = CallStats()
    try:
        if task.piece == 0:
            students = list(client.iter_tag_students(task.tag_id, stats))
            # LGPD: a student erased on request (docs/privacy.md) is never extracted again; the roster is
            # frozen without them, so no later piece, shard or contacts file names them.
            students = erasures.without_erased(cfg, svc.state, students)
            roster = freeze_roster(svc.state, bucket, task, students, last_accesses(cfg, students, context, svc.now()))
        else:
            roster = read_roster(svc.state, task)
        # Carrying (carry.py): which students' calls this piece may skip, decided once per run by piece 0.
        plan = store.plan_for_piece(svc, task, roster, client.progress_units(task.product_ids))
        piece = PieceExtraction(
            client,
            task,
            roster.user_ids,
            last_access_at=roster.last_access_at,
            carry=plan,
            budget_s=cfg.piece_budget_s,
            workers=cfg.cademi_workers,
            stats=stats,
            outage_students=cfg.outage_students,
            student_ref=erasures.log_refs(cfg),
        )
        statuses: Counter[str] = Counter()
        with tempfile.TemporaryFile("w+b") as spool:
            for record in piece.records():
                spool.write(ndjson(record.to_json()))
                statuses[record.status] += 1
            calls = stats.snapshot()
            meta = ShardMeta(
                task=task,
                records=statuses.total(),
                failed=statuses[Status.FAILED],
                no_access=statuses[Status.NO_ACCESS],
                students=piece.students_done,
                api_calls=calls.get("requests", 0),
                rate_limited=calls.get("rate_limited", 0),
                next_index=piece.next_index,
                carried=piece.carried,
                calls_saved=piece.calls_saved,
                carry_checked=piece.carry_checked,
                carry_mismatches=len(piece.mismatches),
                carry_unverified=piece.carry_unverified,
            )
            if piece.mismatches:  # before the shard: a redelivery after a crash would only follow the shard
                store.switch_off(svc.state, task, *piece.mismatches[0], now=svc.now())
            created = create_once(bucket, name, spool, meta.to_metadata(), NDJSON)
    except CademiOutageError as exc:
        log.error("Cademi looks down; piece left for a later delivery: %s", exc, extra=context)
        raise pipeline_error(exc, f"tag {task.tag_id} piece {task.piece}") from exc
    except CademiError as exc:  # a wrong key or URL, or a listing that never ends, is permanent (errors.RULES)
        raise pipeline_error(exc, f"tag {task.tag_id} piece {task.piece}") from exc
    if not created:
        # A concurrent duplicate wrote this piece first, maybe cut at another student: follow *its*
        # continuation, so the next piece starts exactly where the stored shard ends.
        return _follow_existing(svc, name, get_blob(bucket, name))
    _pass_on(svc, meta)
    log.info(
        "piece extracted: %d records, %d failed, %d carried",
        meta.records,
        meta.failed,
        meta.carried,
        extra={**context, "shard": name, "count": meta.records},
    )
    return PieceResult(name, meta.records, task.piece + 1 if meta.next_index is not None else None, skipped=False)


def last_accesses(
    cfg: Settings, students: list[Student], context: dict[str, Any], now: datetime
) -> dict[int, datetime]:
    """Each listed student's last access (`ultimo_acesso_em`) as UTC; null, malformed or future values (after
    `now`) are left out (unknown), the malformed ones counted in one warning: recency is never guessed."""
    found: dict[int, datetime] = {}
    unreadable = 0
    for student in students:
        try:
            moment = parse_cademi_time(student.ultimo_acesso_em, cfg.timezone, now)
        except TimestampError:
            unreadable += 1
            continue
        if moment is not None:
            found[student.user_id] = moment
    if unreadable:
        log.warning("%d students' last access could not be read; left unknown", unreadable, extra=context)
    return found


def _follow_existing(svc: Services, name: str, existing: storage.Blob | None) -> PieceResult:
    """Publish the continuation the stored shard records (idempotent: the next piece is created once)."""
    parsed = parse_progress_shard(name)
    if existing is None or parsed is None:
        raise TransientError(f"shard {name} vanished after a conflicting write")
    meta = ShardMeta.from_metadata(existing.metadata, parsed)
    _pass_on(svc, meta)
    return PieceResult(name, meta.records, meta.task.piece + 1 if meta.next_index is not None else None, True)


def _pass_on(svc: Services, meta: ShardMeta) -> None:
    """What follows a written piece: the tag's next piece, or, after its last, the lane's next tag."""
    if meta.next_index is not None:
        svc.send(meta.task.next(meta.next_index))
        return
    run_id = meta.task.run_id
    try:
        successor = lanes.next_after(svc.state, run_id, meta.task.tag_id)
    except PermanentError as exc:  # e.g. a run started before lanes existed: its lanes end here
        log.error("lane of tag %d cannot pass on: %s", meta.task.tag_id, exc, extra={"run_id": str(run_id)})
        return
    if successor is not None:
        lanes.hand_out(svc, successor)
        log.info(
            "lane passed on to tag %d", successor.tag_id, extra={"run_id": str(run_id), "tag_id": meta.task.tag_id}
        )
