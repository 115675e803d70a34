"""Extraction lanes: a run extracts at most `EXTRACTION_LANES` tags at once, so no task waits for capacity.

Cloud Run answers 429 when every slot of `extract_progress` (instances x concurrency) is busy for ~10 s, and
Pub/Sub counts that as a delivery attempt: publishing every tag at once would park the extra tags in retries
and dead-letter them after five attempts. So a run is admitted in lanes, as many as there are slots:
extract_tags starts one tag per lane, and when a tag's last piece is written its lane claims the next
unclaimed tag of the run and publishes its piece 0. Claims are objects created once, so two lanes never take
the same tag; a claim records the tag whose lane took it, so a redelivered last piece finds the tag its lane
already claimed instead of opening another lane.

Objects (ids only), next to the run's shards:
    lanes/snapshot_date=D/run=R/tags.json       the run's tags in order, with their products (written once)
    lanes/snapshot_date=D/run=R/tag=T.json      the claim of tag T; metadata `after`: the tag whose lane took it
    lanes/snapshot_date=D/run=R/published/tag=T once T's piece 0 is published (a duplicate does not again)
Every object is created once and never rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.objects import (
    lane_claim_body,
    lane_claim_name,
    lane_manifest_name,
    lane_published_name,
    lanes_prefix,
    manifest_body,
    parse_lane_object,
    parse_manifest_body,
)
from progress_monitor.contracts.values import RunId, parse_uint
from progress_monitor.errors import GOOGLE_ERRORS, PermanentError, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.platform.shard_store import JSON, create_once, get_blob
from progress_monitor.platform.warehouse import ActiveTag
from progress_monitor.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    tag_id: int
    after: int | None  # the tag whose lane claimed this one; None for a lane's first tag
    published: bool


def write_manifest(bucket: storage.Bucket, run_id: RunId, tags: list[ActiveTag]) -> list[ActiveTag]:
    """The run's tags, frozen once: a redelivered fan-out gets the tags the first one saw."""
    body = manifest_body([(t.tag_id, t.product_ids) for t in tags])
    if create_once(bucket, lane_manifest_name(run_id), body, {}, JSON):
        return tags
    return read_manifest(bucket, run_id)


@needs("objects.read {lane_manifest_name}")
def read_manifest(bucket: storage.Bucket, run_id: RunId) -> list[ActiveTag]:
    blob = get_blob(bucket, lane_manifest_name(run_id))
    if blob is None:
        raise PermanentError(f"run {run_id} has no tag manifest")
    try:
        return [ActiveTag(tag, products) for tag, products in parse_manifest_body(blob.download_as_bytes())]
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"tag manifest of run {run_id} is unusable: {exc}") from exc


@needs("objects.read {lanes_prefix}")
def claims(bucket: storage.Bucket, run_id: RunId) -> dict[int, Claim]:
    """Every claim of the run, by tag."""
    found: dict[int, int | None] = {}
    published: set[int] = set()
    try:
        for blob in bucket.list_blobs(prefix=lanes_prefix(run_id)):
            parsed = parse_lane_object(blob.name)
            if parsed is not None and parsed[1]:
                published.add(parsed[0])
            elif parsed is not None:
                found[parsed[0]] = _after(blob)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot list the lanes of run {run_id}") from exc
    return {tag: Claim(tag, after, tag in published) for tag, after in found.items()}


def _after(blob: storage.Blob) -> int | None:
    """Whose lane took a claim: in the object's metadata, so listing the claims reads no object."""
    after = (blob.metadata or {}).get("after", "-1")
    if after == "":
        return None
    value = parse_uint(after)
    return -1 if value is None else value  # unreadable: taken by a lane we cannot name


def _claim(bucket: storage.Bucket, run_id: RunId, tag_id: int, after: int | None) -> bool:
    marker = "" if after is None else str(after)
    return create_once(bucket, lane_claim_name(run_id, tag_id), lane_claim_body(after), {"after": marker}, JSON)


def hand_out(svc: Services, task: ProgressTask) -> None:
    """Publish a claimed tag's piece 0, then record that it is published, so a duplicate does not publish it
    again (a crash between the two publishes it twice, which the shard's create-once absorbs)."""
    svc.send(task)
    create_once(svc.state, lane_published_name(task.run_id, task.tag_id), b"{}", {}, JSON)


def start(bucket: storage.Bucket, run_id: RunId, tags: list[ActiveTag], lanes: int) -> list[ProgressTask]:
    """The first tag of each lane: claimed, and its piece-0 task unless a first delivery published it."""
    for tag in tags[:lanes]:
        _claim(bucket, run_id, tag.tag_id, None)
    held = claims(bucket, run_id)
    return [
        ProgressTask(run_id, tag.tag_id, tag.product_ids)
        for tag in tags[:lanes]
        if tag.tag_id in held and not held[tag.tag_id].published
    ]


def reopen(bucket: storage.Bucket, run_id: RunId, tags: list[ActiveTag], count: int) -> list[ProgressTask]:
    """Open up to `count` lanes again on unclaimed tags (the resume of a run whose lanes were lost)."""
    opened: list[ProgressTask] = []
    for tag in tags:
        if len(opened) >= count:
            break
        if _claim(bucket, run_id, tag.tag_id, None):
            opened.append(ProgressTask(run_id, tag.tag_id, tag.product_ids))
    return opened


def next_after(bucket: storage.Bucket, run_id: RunId, finished: int) -> ProgressTask | None:
    """The tag the lane of `finished` takes next, with its piece-0 task; None when it is already published
    (a redelivered last piece) or when every tag of the run is taken (the lane ends)."""
    manifest = {t.tag_id: t for t in read_manifest(bucket, run_id)}
    held = claims(bucket, run_id)
    mine = next((c for c in held.values() if c.after == finished), None)
    if mine is None:
        for tag_id in manifest:
            if tag_id in held:
                continue
            if _claim(bucket, run_id, tag_id, finished):
                mine = Claim(tag_id, finished, published=False)
                break
            blob = get_blob(bucket, lane_claim_name(run_id, tag_id))  # lost the race: whose lane took it?
            if blob is not None and _after(blob) == finished:
                mine = claims(bucket, run_id)[tag_id]  # a duplicate of this very piece did
                break
    if mine is None or mine.published:
        return None
    tag = manifest[mine.tag_id]
    return ProgressTask(run_id, tag.tag_id, tag.product_ids)
