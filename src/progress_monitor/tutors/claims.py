"""The digest claims: one object per week and channel (`slack/digests/<week>/<channel>.json`, named by
contracts.objects) deciding which delivery of a digest task posts or updates that channel's message.

Created once (generation precondition), rewritten only by compare-and-swap on its generation, released after
a Slack outage. Its body: the run that claimed it, when (`claimed_at`, for the lease), the message's `ts` once
Slack answered, the students it names (`listed`, the only buttons a click may come from) and its `status`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.contracts.objects import digest_claim_name
from progress_monitor.contracts.values import RunId
from progress_monitor.errors import GOOGLE_ERRORS, PermanentError, TransientError, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.platform.shard_store import JSON, create_once, get_blob

log = logging.getLogger("progress_monitor.tutors")


@dataclass
class Claim:
    blob: storage.Blob
    body: dict[str, Any]

    @property
    def generation(self) -> int:
        return int(self.blob.generation or 0)

    @property
    def ts(self) -> str | None:
        """The posted message's id in its channel, once Slack answered."""
        ts = self.body.get("ts")
        return str(ts) if ts else None

    @property
    def listed(self) -> set[tuple[int, int]]:
        """(class, student) pairs the message names: the only buttons a click may come from."""
        return {(int(t), int(u)) for t, u in self.body.get("listed", [])}


@needs("objects.read {digest_claim_name}")
def read(bucket: storage.Bucket, week: date, channel: str) -> Claim | None:
    blob = get_blob(bucket, digest_claim_name(week, channel))
    if blob is None:
        return None
    try:
        body = json.loads(blob.download_as_bytes())
    except exceptions.NotFound:
        return None
    except ValueError as exc:
        raise TransientError(f"digest claim {blob.name} unreadable: {type(exc).__name__}") from exc
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot read digest claim {blob.name}") from exc
    if not isinstance(body, dict):
        raise PermanentError(f"digest claim {blob.name} is not an object")
    return Claim(blob, body)


@needs("objects.rewrite {digest_claim_name}")
def replace(bucket: storage.Bucket, claim: Claim, body: dict[str, Any]) -> bool:
    """Rewrite a claim only if nobody else did since we read it (generation precondition)."""
    blob = bucket.blob(claim.blob.name)
    try:
        blob.upload_from_string(json.dumps(body), content_type="application/json", if_generation_match=claim.generation)
    except exceptions.PreconditionFailed:
        return False
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, f"cannot write {blob.name}") from exc
    claim.blob, claim.body = blob, body  # the upload's answer set the new generation on `blob`
    return True


@needs("objects.delete {digest_claim_name}")
def release(bucket: storage.Bucket, claim: Claim) -> None:
    try:
        bucket.blob(claim.blob.name).delete(if_generation_match=claim.generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass
    except exceptions.GoogleAPIError as exc:
        log.warning("could not release digest claim %s: %s", claim.blob.name, type(exc).__name__)


def create(bucket: storage.Bucket, week: date, channel: str, body: dict[str, Any]) -> bool:
    """Claim the week's digest in `channel`; False when another delivery holds (or held) the claim."""
    return create_once(bucket, digest_claim_name(week, channel), json.dumps(body).encode(), {}, JSON)


DONE = ("posted", "updated", "refused")  # a claim in any other state is being worked on (or was, by a dead delivery)
EPOCH = datetime.min.replace(tzinfo=UTC)


def claimed_at_of(body: dict[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(str(body.get("claimed_at")))
    except ValueError:
        return EPOCH  # an unreadable claim protects nothing: it is taken over
    return moment if moment.tzinfo else EPOCH


class Step(Enum):
    """What a delivery does with a channel whose claim another delivery created (see the module doc)."""

    SKIP = "skip"  # this run's digest is in the channel, or a later run's is
    RECORD_UNCONFIRMED = "record_unconfirmed"  # Slack may have posted it: never post again; record it again
    WAIT = "wait"  # another delivery is posting or updating within its lease
    UPDATE = "update"  # a re-run of a posted week: the same message shows the new figures
    TAKE_OVER = "take_over"  # no message yet (a delivery died before Slack answered, or Slack refused): post


def next_step(
    body: dict[str, Any],
    run_id: RunId,
    now: datetime,
    lease: timedelta,
    started_later: Callable[[str], bool],
) -> Step:
    """The decision for an existing claim; `started_later(posted_by)` says whether `run_id` is a later run of the
    week than the one whose figures the message shows (asked only when that matters)."""
    status, ts = body.get("status"), body.get("ts")
    same_run = body.get("run_id") == str(run_id)
    if status == "unconfirmed":  # Slack may have posted it (see _unconfirmed): never post again
        return Step.RECORD_UNCONFIRMED if same_run else Step.SKIP
    if same_run and status in DONE and (ts or status != "refused"):
        return Step.SKIP  # a redelivery or a replay: this run's digest is in the channel
    if ts and not same_run and not started_later(str(body.get("run_id"))):
        return Step.SKIP  # a late task of an earlier run: a later run's figures are in the channel
    if status not in DONE and now - claimed_at_of(body) < lease:
        return Step.WAIT
    return Step.UPDATE if ts else Step.TAKE_OVER
