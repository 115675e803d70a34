"""Objects created once (generation precondition), the frozen roster (state bucket) and its contacts file (shards
bucket), and the lookups of a run's shards."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.contracts.cademi import Student
from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import (
    ShardMeta,
    ShardName,
    contacts_name,
    parse_contacts,
    parse_progress_shard,
    parse_roster_body,
    roster_body,
    roster_name,
    run_contacts_prefix,
    run_shards_prefix,
)
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import GOOGLE_ERRORS, PermanentError, pipeline_error
from progress_monitor.platform.access import needs

log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"
JSON = "application/json"


def ndjson(row: dict[str, object]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@needs("objects.read {name}")
def get_blob(bucket: storage.Bucket, name: str) -> storage.Blob | None:
    """The object with its metadata, or None; a failed call is a pipeline error (errors.RULES)."""
    try:
        return bucket.get_blob(name)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot read gs://{bucket.name}/{name}") from exc


@needs("objects.create {name}")
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
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot write gs://{bucket.name}/{name}") from exc
    return True


@dataclass(frozen=True)
class Roster:
    """A run's frozen roster of one tag: the students in order, and when each last accessed Cademi (as the
    listing said; absent when unknown)."""

    user_ids: tuple[int, ...]
    last_access_at: Mapping[int, datetime] = field(default_factory=dict)


def freeze_roster(
    state: storage.Bucket,
    shards: storage.Bucket,
    task: ProgressTask,
    students: list[Student],
    last_access_at: Mapping[int, datetime],
) -> Roster:
    """Store the tag's roster (ids and last access, no contact data) once per run in the state bucket, and hand
    the students' contact data to the loader through the shards bucket.

    Every piece, duplicate or redelivery of the run then extracts the same students in the same order: when an
    earlier attempt froze a roster first, that one is returned."""
    roster = Roster(tuple(s.user_id for s in students), dict(last_access_at))
    name = roster_name(task.run_id, task.tag_id)
    if not create_once(state, name, roster_body(roster.user_ids, dict(roster.last_access_at)), {}, JSON):
        roster = read_roster(state, task)
    if students:
        contacts = b"".join(
            ndjson({"user_id": s.user_id, "nome": s.nome, "email": s.email, "celular": s.celular}) for s in students
        )
        create_once(shards, contacts_name(task.run_id, task.tag_id), contacts, {"tag_id": str(task.tag_id)}, NDJSON)
    return roster


@needs("objects.read {roster_name}")
def read_roster(bucket: storage.Bucket, task: ProgressTask) -> Roster:
    """The roster piece 0 froze (in the state bucket); PermanentError when it is missing or unusable."""
    blob = get_blob(bucket, roster_name(task.run_id, task.tag_id))
    if blob is None:
        raise PermanentError(f"roster of tag {task.tag_id} for run {task.run_id} is missing")
    try:
        ids, last_access = parse_roster_body(blob.download_as_bytes())
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"roster of tag {task.tag_id} is unusable: {exc}") from exc
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot read the roster of tag {task.tag_id}") from exc
    return Roster(tuple(ids), last_access)


@needs("objects.read {run_shards_prefix}", "objects.read {run_contacts_prefix}")
def run_objects(bucket: storage.Bucket, run_id: RunId) -> dict[str, int]:
    """A run's progress shards and not yet merged contacts files: object name -> generation."""
    found: dict[str, int] = {}
    for prefix in (run_shards_prefix(run_id), run_contacts_prefix(run_id)):
        for blob in bucket.list_blobs(prefix=prefix):
            if parse_progress_shard(blob.name) or parse_contacts(blob.name):
                found[blob.name] = int(blob.generation or 0)
    return found


@needs("objects.read {run_shards_prefix}")
def latest_shards(bucket: storage.Bucket, run_id: RunId) -> dict[int, ShardMeta]:
    """Per tag, the metadata of the run's highest piece written so far."""
    latest: dict[int, tuple[ShardName, storage.Blob]] = {}
    for blob in bucket.list_blobs(prefix=run_shards_prefix(run_id)):
        name = parse_progress_shard(blob.name)
        if name is not None and (name.tag_id not in latest or name.piece > latest[name.tag_id][0].piece):
            latest[name.tag_id] = (name, blob)
    return {tag: ShardMeta.from_metadata(blob.metadata, name) for tag, (name, blob) in latest.items()}
