"""The shards bucket: objects created once (generation precondition), the frozen roster, and lookups."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.cademi import Student
from progress_monitor.contracts import (
    ProgressTask,
    RunId,
    ShardMeta,
    ShardName,
    contacts_name,
    parse_contacts,
    parse_progress_shard,
    parse_uint,
    roster_name,
    run_contacts_prefix,
    run_shards_prefix,
)
from progress_monitor.errors import PermanentError, TransientError

log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"


def ndjson(row: dict[str, object]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def get_blob(bucket: storage.Bucket, name: str) -> storage.Blob | None:
    """The object with its metadata, or None; API failures are transient."""
    try:
        return bucket.get_blob(name)
    except exceptions.GoogleAPIError as exc:
        raise TransientError(f"cannot read gs://{bucket.name}/{name}: {type(exc).__name__}") from exc


def create_once(
    bucket: storage.Bucket, name: str, data: bytes | IO[bytes], metadata: dict[str, str], content_type: str
) -> bool:
    """Upload only if absent (generation 0); False when the object already existed (ours is dropped)."""
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


@dataclass(frozen=True)
class Roster:
    """A run's frozen roster of one tag: the students in order, and when each last accessed Cademi (as the
    listing said; absent when unknown)."""

    user_ids: tuple[int, ...]
    last_access_at: Mapping[int, datetime] = field(default_factory=dict)


def freeze_roster(
    bucket: storage.Bucket, task: ProgressTask, students: list[Student], last_access_at: Mapping[int, datetime]
) -> Roster:
    """Store the tag's roster (ids and last access, no contact data) once per run, and hand the students'
    contact data to the loader.

    Every piece, duplicate or redelivery of the run then extracts the same students in the same order: when an
    earlier attempt froze a roster first, that one is returned."""
    roster = Roster(tuple(s.user_id for s in students), dict(last_access_at))
    body = {
        "user_ids": list(roster.user_ids),
        "last_access_at": {str(user): moment.isoformat() for user, moment in roster.last_access_at.items()},
    }
    name = roster_name(task.run_id, task.tag_id)
    if not create_once(bucket, name, json.dumps(body).encode(), {}, "application/json"):
        roster = read_roster(bucket, task)
    if students:
        contacts = b"".join(
            ndjson({"user_id": s.user_id, "nome": s.nome, "email": s.email, "celular": s.celular}) for s in students
        )
        create_once(bucket, contacts_name(task.run_id, task.tag_id), contacts, {"tag_id": str(task.tag_id)}, NDJSON)
    return roster


def read_roster(bucket: storage.Bucket, task: ProgressTask) -> Roster:
    """The roster piece 0 froze; PermanentError when it is missing or unusable."""
    blob = get_blob(bucket, roster_name(task.run_id, task.tag_id))
    if blob is None:
        raise PermanentError(f"roster of tag {task.tag_id} for run {task.run_id} is missing")
    try:
        body = json.loads(blob.download_as_bytes())
        ids = body["user_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
            raise ValueError("user_ids must be positive integers")
        if len(set(ids)) != len(ids):
            raise ValueError("user_ids repeat")
        # Rosters frozen before recency was kept have no last access: unknown, not "never".
        accesses = body.get("last_access_at") or {}
        if not isinstance(accesses, dict):
            raise ValueError("last_access_at must be an object")
        last_access = {}
        for user, moment in accesses.items():
            user_id = parse_uint(user)
            if user_id is None or not isinstance(moment, str):
                raise ValueError("last_access_at must map user ids to times")
            last_access[user_id] = datetime.fromisoformat(moment)
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"roster of tag {task.tag_id} is unusable: {exc}") from exc
    except exceptions.GoogleAPIError as exc:
        raise TransientError(f"cannot read the roster of tag {task.tag_id}: {type(exc).__name__}") from exc
    return Roster(tuple(ids), last_access)


def run_objects(bucket: storage.Bucket, run_id: RunId) -> dict[str, int]:
    """A run's progress shards and not yet merged contacts files: object name -> generation."""
    found: dict[str, int] = {}
    for prefix in (run_shards_prefix(run_id), run_contacts_prefix(run_id)):
        for blob in bucket.list_blobs(prefix=prefix):
            if parse_progress_shard(blob.name) or parse_contacts(blob.name):
                found[blob.name] = int(blob.generation or 0)
    return found


def latest_shards(bucket: storage.Bucket, run_id: RunId) -> dict[int, ShardMeta]:
    """Per tag, the metadata of the run's highest piece written so far."""
    latest: dict[int, tuple[ShardName, storage.Blob]] = {}
    for blob in bucket.list_blobs(prefix=run_shards_prefix(run_id)):
        name = parse_progress_shard(blob.name)
        if name is not None and (name.tag_id not in latest or name.piece > latest[name.tag_id][0].piece):
            latest[name.tag_id] = (name, blob)
    return {tag: ShardMeta.from_metadata(blob.metadata, name) for tag, (name, blob) in latest.items()}
