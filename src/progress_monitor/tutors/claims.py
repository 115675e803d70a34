"""The digest claims: one object per week and channel (`slack/digests/<week>/<channel>.json`, named by
contracts.objects) deciding which delivery of a digest task posts or updates that channel's message.

Created once (generation precondition), rewritten only by compare-and-swap on its generation, released after
a Slack outage. Its body: the run that claimed it, when (`claimed_at`, for the lease), the message's `ts` once
Slack answered, the students it names (`listed`, the only buttons a click may come from) and its `status`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.contracts.objects import digest_claim_name
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


def claimed_at(claim: Claim) -> datetime:
    try:
        return datetime.fromisoformat(str(claim.body.get("claimed_at")))
    except ValueError:
        return EPOCH  # an unreadable claim protects nothing: it is taken over
